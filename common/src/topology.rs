//! Machine topology specs for the lab: `numa=2,llc=2,cores=2,smt=2` or the compact `2n2l2c2t`.
//!
//! A spec names NUMA nodes, LLCs per node, cores per LLC and hardware threads per core. CPU ids
//! are numbered node-major, then LLC, core and thread, which is how QEMU enumerates vCPUs when
//! every LLC is its own socket (the lab's mapping; see `qemu_args`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest vCPU count the lab accepts: QEMU's default PC machine has no more. Big guests
/// crawl under TCG on a small host (boot alone takes minutes), so they are for attach and
/// smoke runs, not for benchmarks.
pub const MAX_LAB_CPUS: u32 = 255;

/// xAPIC ids stop below 255 (the broadcast id) without interrupt remapping, which the lab's
/// machine lacks.
const MAX_APIC_ID: u64 = 254;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologySpec {
    pub nodes: u32,
    pub llcs_per_node: u32,
    pub cores_per_llc: u32,
    pub threads_per_core: u32,
}

/// CPU groups the guest should report, each a sorted list of CPU ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuGroups {
    pub llcs: Vec<Vec<u32>>,
    pub nodes: Vec<Vec<u32>>,
    pub smt_cores: Vec<Vec<u32>>,
}

impl TopologySpec {
    /// A flat machine: one node, one LLC, `cpus` cores without SMT.
    pub fn flat(cpus: u32) -> Self {
        Self {
            nodes: 1,
            llcs_per_node: 1,
            cores_per_llc: cpus,
            threads_per_core: 1,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let spec = if s.contains('=') {
            Self::parse_keyed(s)?
        } else {
            Self::parse_compact(s)?
        };
        spec.validate()?;
        Ok(spec)
    }

    fn parse_keyed(s: &str) -> Result<Self> {
        let mut spec = Self::flat(1);
        let mut seen_cores = false;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .with_context(|| format!("topology item '{part}' is not key=value"))?;
            let n: u32 = value.trim().parse().with_context(|| {
                format!("topology item '{part}': '{value}' is not a whole number")
            })?;
            match key.trim() {
                "numa" | "nodes" | "node" => spec.nodes = n,
                "llc" | "llcs" => spec.llcs_per_node = n,
                "cores" | "core" => {
                    spec.cores_per_llc = n;
                    seen_cores = true;
                }
                "smt" | "threads" => spec.threads_per_core = n,
                other => bail!("unknown topology key '{other}' (use numa, llc, cores, smt)"),
            }
        }
        if !seen_cores {
            bail!("topology '{s}' needs cores=N (cores per LLC)");
        }
        Ok(spec)
    }

    fn parse_compact(s: &str) -> Result<Self> {
        let mut spec = Self::flat(1);
        let mut seen_cores = false;
        let mut digits = String::new();
        for ch in s.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            if digits.is_empty() {
                bail!("topology '{s}': expected a number before '{ch}'");
            }
            let n: u32 = digits
                .parse()
                .with_context(|| format!("topology '{s}': number too large"))?;
            digits.clear();
            match ch {
                'n' => spec.nodes = n,
                'l' => spec.llcs_per_node = n,
                'c' => {
                    spec.cores_per_llc = n;
                    seen_cores = true;
                }
                't' => spec.threads_per_core = n,
                _ => bail!("topology '{s}': unknown unit '{ch}' (n=NUMA nodes, l=LLCs per node, c=cores per LLC, t=threads per core)"),
            }
        }
        if !digits.is_empty() {
            bail!("topology '{s}': trailing number '{digits}' has no unit (n, l, c or t)");
        }
        if !seen_cores {
            bail!("topology '{s}' needs a core count, e.g. 2l2c");
        }
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("NUMA nodes", self.nodes),
            ("LLCs per node", self.llcs_per_node),
            ("cores per LLC", self.cores_per_llc),
            ("threads per core", self.threads_per_core),
        ] {
            if v == 0 {
                bail!("topology: {name} must be at least 1");
            }
        }
        if self.threads_per_core > 2 {
            bail!(
                "topology: QEMU's x86 CPUs offer at most 2 threads per core here (asked {})",
                self.threads_per_core
            );
        }
        let cpus = self.nodes as u64
            * self.llcs_per_node as u64
            * self.cores_per_llc as u64
            * self.threads_per_core as u64;
        if cpus > MAX_LAB_CPUS as u64 {
            bail!("topology: {cpus} CPUs is more than the lab's limit of {MAX_LAB_CPUS}");
        }
        let id = self.max_apic_id();
        if id > MAX_APIC_ID {
            bail!(
                "topology: its highest APIC id would be {id} (QEMU pads cores and threads to powers \
                 of two per socket), past the {MAX_APIC_ID} a guest without interrupt remapping can \
                 address: use fewer LLCs or cores per LLC"
            );
        }
        Ok(())
    }

    pub fn nr_cpus(&self) -> u32 {
        self.nodes * self.llcs_per_node * self.cores_per_llc * self.threads_per_core
    }

    /// The highest x86 APIC id QEMU gives this topology (every LLC a socket; the core and
    /// thread fields each as many bits as their count needs).
    pub fn max_apic_id(&self) -> u64 {
        let bits = |n: u32| u64::from(n.max(1).next_power_of_two().trailing_zeros());
        let (tb, cb) = (bits(self.threads_per_core), bits(self.cores_per_llc));
        (u64::from(self.nr_llcs() - 1) << (cb + tb))
            | (u64::from(self.cores_per_llc - 1) << tb)
            | u64::from(self.threads_per_core - 1)
    }

    pub fn nr_llcs(&self) -> u32 {
        self.nodes * self.llcs_per_node
    }

    pub fn cpus_per_llc(&self) -> u32 {
        self.cores_per_llc * self.threads_per_core
    }

    pub fn groups(&self) -> CpuGroups {
        let per_llc = self.cpus_per_llc();
        let per_node = per_llc * self.llcs_per_node;
        let range = |start: u32, len: u32| (start..start + len).collect::<Vec<_>>();
        CpuGroups {
            llcs: (0..self.nr_llcs())
                .map(|l| range(l * per_llc, per_llc))
                .collect(),
            nodes: (0..self.nodes)
                .map(|n| range(n * per_node, per_node))
                .collect(),
            smt_cores: (0..self.nr_cpus() / self.threads_per_core)
                .map(|c| range(c * self.threads_per_core, self.threads_per_core))
                .collect(),
        }
    }

    /// QEMU arguments for this topology. Every LLC becomes its own socket: QEMU 10 can't split
    /// an L3 inside a socket without SMT, and `dies`/`modules` crash it with an Intel vendor.
    /// `memdev_prefix` names memory backends the caller creates, one per node
    /// (`{prefix}{node}`); `mem_mib` is split evenly.
    pub fn qemu_args(&self, mem_mib: u64, shared_memory: bool) -> Vec<String> {
        let sockets = self.nr_llcs();
        let mut args = vec![
            "-cpu".into(),
            // Without an Intel vendor, `-cpu max` reports AMD without topoext and every CPU
            // looks like its own LLC.
            "max,vendor=GenuineIntel".into(),
            "-smp".into(),
            format!(
                "{},sockets={},cores={},threads={}",
                self.nr_cpus(),
                sockets,
                self.cores_per_llc,
                self.threads_per_core
            ),
            "-m".into(),
            format!("{mem_mib}M"),
        ];
        let node_mem = mem_mib / self.nodes as u64;
        let per_node = self.cpus_per_llc() * self.llcs_per_node;
        let backend = if shared_memory {
            "memory-backend-memfd"
        } else {
            "memory-backend-ram"
        };
        for n in 0..self.nodes {
            let share = if shared_memory { ",share=on" } else { "" };
            args.push("-object".into());
            args.push(format!("{backend},id=mem{n},size={node_mem}M{share}"));
            args.push("-numa".into());
            let first = n * per_node;
            args.push(format!(
                "node,nodeid={n},cpus={}-{},memdev=mem{n}",
                first,
                first + per_node - 1
            ));
        }
        args
    }

    /// Memory must divide evenly among nodes for QEMU to accept the backends.
    pub fn check_memory(&self, mem_mib: u64) -> Result<()> {
        if !mem_mib.is_multiple_of(self.nodes as u64) {
            bail!(
                "--mem {mem_mib}M does not split evenly over {} NUMA nodes",
                self.nodes
            );
        }
        if mem_mib / (self.nodes as u64) < 256 {
            bail!("--mem {mem_mib}M leaves less than 256M per NUMA node");
        }
        Ok(())
    }
}

impl fmt::Display for TopologySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}n{}l{}c{}t",
            self.nodes, self.llcs_per_node, self.cores_per_llc, self.threads_per_core
        )
    }
}

/// Parse a Linux cpulist such as `0-3,8,10-11`.
pub fn parse_cpulist(s: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
                if b < a {
                    bail!("bad cpulist range '{part}'");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(
                part.parse()
                    .with_context(|| format!("bad cpulist item '{part}'"))?,
            ),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Normalise observed groups (dedupe, sort) so they compare with `TopologySpec::groups`.
pub fn normalise_groups(mut groups: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    for g in &mut groups {
        g.sort_unstable();
        g.dedup();
    }
    groups.retain(|g| !g.is_empty());
    groups.sort();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_topologies_fit_xapic_ids_or_are_refused() {
        let t = TopologySpec::parse("2n4l11c2t").unwrap();
        assert_eq!(t.nr_cpus(), 176);
        assert_eq!(t.max_apic_id(), 7 * 32 + 10 * 2 + 1);
        assert_eq!(TopologySpec::parse("4n4l4c").unwrap().max_apic_id(), 63);
        assert_eq!(TopologySpec::parse("1l2c").unwrap().max_apic_id(), 1);
        // 192 CPUs in one socket: 8 core bits, ids up to 191 fit.
        assert!(TopologySpec::parse("1l192c").is_ok());
        // 16 sockets of 9 cores pad to 16 each: ids up to 248 fit; 17 LLCs of 9 do not.
        assert!(TopologySpec::parse("16l9c").is_ok());
        let e = TopologySpec::parse("17l9c").unwrap_err().to_string();
        assert!(e.contains("APIC id"), "{e}");
        let e = TopologySpec::parse("2n4l16c2t").unwrap_err().to_string();
        assert!(e.contains("limit of 255"), "{e}");
    }

    #[test]
    fn compact_and_keyed_forms_agree() {
        let a = TopologySpec::parse("2n2l2c2t").unwrap();
        let b = TopologySpec::parse("numa=2,llc=2,cores=2,smt=2").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.nr_cpus(), 16);
        assert_eq!(a.to_string(), "2n2l2c2t");
        assert_eq!(TopologySpec::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn omitted_units_default_to_one() {
        let t = TopologySpec::parse("2l2c").unwrap();
        assert_eq!(
            t,
            TopologySpec {
                nodes: 1,
                llcs_per_node: 2,
                cores_per_llc: 2,
                threads_per_core: 1
            }
        );
        assert_eq!(
            TopologySpec::parse("cores=4").unwrap(),
            TopologySpec::flat(4)
        );
    }

    #[test]
    fn bad_specs_are_rejected_with_reason() {
        for (bad, needle) in [
            ("", "core"),
            ("2x", "unknown unit"),
            ("2l", "core count"),
            ("0c", "at least 1"),
            ("4c3t", "2 threads"),
            ("2c3", "trailing"),
            ("n2c", "number before"),
            ("llc=2", "cores=N"),
            ("cores=two", "whole number"),
            ("sockets=2,cores=2", "unknown topology key"),
            ("8n8l8c", "limit"),
        ] {
            let err = TopologySpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn groups_follow_qemu_enumeration() {
        let t = TopologySpec::parse("2n1l2c2t").unwrap();
        let g = t.groups();
        assert_eq!(g.llcs, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(g.nodes, g.llcs);
        assert_eq!(
            g.smt_cores,
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]
        );
        let t = TopologySpec::parse("2l2c").unwrap();
        assert_eq!(t.groups().llcs, vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(t.groups().nodes, vec![vec![0, 1, 2, 3]]);
    }

    #[test]
    fn qemu_args_map_llcs_to_sockets_and_nodes_to_backends() {
        let t = TopologySpec::parse("numa=2,llc=1,cores=2").unwrap();
        let args = t.qemu_args(2048, true).join(" ");
        assert!(
            args.contains("-smp 4,sockets=2,cores=2,threads=1"),
            "{args}"
        );
        assert!(
            args.contains("memory-backend-memfd,id=mem0,size=1024M,share=on"),
            "{args}"
        );
        assert!(
            args.contains("node,nodeid=1,cpus=2-3,memdev=mem1"),
            "{args}"
        );
        assert!(args.contains("vendor=GenuineIntel"));
        assert!(t.check_memory(2047).is_err());
        assert!(t.check_memory(2048).is_ok());
    }

    #[test]
    fn cpulists() {
        assert_eq!(
            parse_cpulist("0-2,5,7-8\n").unwrap(),
            vec![0, 1, 2, 5, 7, 8]
        );
        assert_eq!(parse_cpulist("3").unwrap(), vec![3]);
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("a").is_err());
        assert_eq!(
            normalise_groups(vec![vec![1, 0], vec![0, 1], vec![2, 3]]),
            vec![vec![0, 1], vec![2, 3]]
        );
    }
}
