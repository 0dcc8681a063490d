//! Per-workload rules: the `[[rule]]` tables of the `--config` file, typed and checked here, laid
//! out for the BPF side (`src/bpf/rules.bpf.h`), and the cgroup paths they name resolved to
//! cgroup ids (the kernel knows ids, not paths).
//!
//! ```toml
//! [[rule]]
//! name = "erlang"
//! match = { pcomm = "beam.smp" }        # every thread of a process named beam.smp
//! class = "latency"
//!
//! [[rule]]
//! name = "batch"
//! match = { cgroup = "/batch.slice" }   # that cgroup and everything below it
//! class = "batch"
//! slice-us = 20000
//! ```
//!
//! A task matches a rule when every matcher the rule gives holds; the first rule that matches
//! wins. Matchers: `comm` (the thread's name) and `pcomm` (its process's, the thread group
//! leader's), exact or, with a trailing `*`, a prefix; `cgroup`, a cgroup v2 path that matches
//! itself and every cgroup below it (with a trailing `*`, any path that starts so); `uid` and
//! `gid` (effective ids); `nice` and `nr-cpus` (CPUs it may run on), a number or `[min, max]`.
//! Actions: `class` (`latency`: latency criticality at least that of a task woken ~1000 times
//! a second, the right to preempt on wake-up, and a sched_yield() that gives away one turn, not
//! a place behind every task due within a slice; `batch`: no criticality, never preempts on
//! wake-up, and always due at the offset cap (half the wait bound), so it takes what latency
//! and normal work leaves; `normal`, the default), `slice-us` (its turns at most this), `lat-cri-floor` (1 to
//! 27, over the class's) and `may-preempt` (over the class's). None reaches past the wait
//! bound.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::bpf_intf;

pub const MAX_RULES: usize = bpf_intf::concord_consts_MAX_RULES as usize;
const NAME_LEN: usize = bpf_intf::concord_consts_RULE_COMM_LEN as usize;
const LAT_CRI_MAX: u64 = crate::policy::LAT_CRI_MAX;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Latency,
    #[default]
    Normal,
    Batch,
}

/// A number or an inclusive `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Span<T> {
    One(T),
    Range([T; 2]),
}

impl<T: Copy> Span<T> {
    fn bounds(self) -> (T, T) {
        match self {
            Span::One(v) => (v, v),
            Span::Range([a, b]) => (a, b),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Match {
    pub comm: Option<String>,
    pub pcomm: Option<String>,
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub nice: Option<Span<i32>>,
    pub nr_cpus: Option<Span<u32>>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: Match,
    #[serde(default)]
    pub class: Class,
    pub slice_us: Option<u64>,
    pub lat_cri_floor: Option<u64>,
    pub may_preempt: Option<bool>,
}

/// A name matcher: the bytes compared and whether they are a prefix.
fn name_matcher(what: &str, v: &str) -> Result<(Vec<u8>, bool)> {
    let (bytes, prefix) = match v.strip_suffix('*') {
        Some(p) => (p, true),
        None => (v, false),
    };
    if bytes.is_empty() || bytes.len() >= NAME_LEN || bytes.contains(['\0', '*']) {
        bail!(
            "{what} {v:?}: a task name of 1 to {} bytes, optionally ending in * (a prefix)",
            NAME_LEN - 1
        );
    }
    Ok((bytes.as_bytes().to_vec(), prefix))
}

impl Rule {
    /// Every value checked; `slice_max_us` (the scheduler's) bounds a rule's slice.
    fn validate(&self, slice_max_us: u64) -> Result<()> {
        if self.name.is_empty() || self.name.len() > 32 || !self.name.bytes().all(name_byte) {
            bail!("name {:?}: 1 to 32 of a-z, A-Z, 0-9, - and _", self.name);
        }
        let m = &self.matches;
        if *m == Match::default() {
            bail!("match is empty: give at least one of comm, pcomm, cgroup, uid, gid, nice, nr-cpus (a rule for every task is the scheduler's own settings)");
        }
        if let Some(c) = &m.comm {
            name_matcher("comm", c)?;
        }
        if let Some(c) = &m.pcomm {
            name_matcher("pcomm", c)?;
        }
        if let Some(c) = &m.cgroup {
            if !c.starts_with('/') || c.contains("//") || c.contains('\0') {
                bail!("cgroup {c:?}: a cgroup v2 path from the hierarchy's root, e.g. \"/system.slice/rabbitmq.service\"");
            }
        }
        if let Some(n) = m.nice {
            let (a, b) = n.bounds();
            if !(-20..=19).contains(&a) || !(-20..=19).contains(&b) || a > b {
                bail!("nice {a}..{b}: values from -20 to 19, the smaller first");
            }
        }
        if let Some(n) = m.nr_cpus {
            let (a, b) = n.bounds();
            if a == 0 || a > b {
                bail!("nr-cpus {a}..{b}: at least 1, the smaller first");
            }
        }
        if let Some(s) = self.slice_us {
            let floor = crate::policy::SLICE_FLOOR_NS / 1000;
            if s < floor || s > slice_max_us {
                bail!("slice-us {s}: from {floor} to --slice-max-us ({slice_max_us})");
            }
        }
        if let Some(f) = self.lat_cri_floor {
            if !(1..=LAT_CRI_MAX).contains(&f) {
                bail!("lat-cri-floor {f}: from 1 to {LAT_CRI_MAX}");
            }
        }
        Ok(())
    }

    /// The rule as the BPF side reads it.
    pub fn to_bpf(&self) -> bpf_intf::rule {
        // SAFETY: struct rule is integers and byte arrays: all zeroes is "match anything, do
        // nothing".
        let mut r: bpf_intf::rule = unsafe { std::mem::zeroed() };
        let m = &self.matches;
        if let Some((bytes, prefix)) = m.comm.as_deref().and_then(|c| name_matcher("", c).ok()) {
            r.comm[..bytes.len()].copy_from_slice(&bytes);
            r.comm_len = bytes.len() as u32;
            r.comm_prefix = prefix as u32;
        }
        if let Some((bytes, prefix)) = m.pcomm.as_deref().and_then(|c| name_matcher("", c).ok()) {
            r.pcomm[..bytes.len()].copy_from_slice(&bytes);
            r.pcomm_len = bytes.len() as u32;
            r.pcomm_prefix = prefix as u32;
        }
        r.match_cgroup = m.cgroup.is_some() as u32;
        if let Some(u) = m.uid {
            (r.match_uid, r.uid) = (1, u);
        }
        if let Some(g) = m.gid {
            (r.match_gid, r.gid) = (1, g);
        }
        if let Some(n) = m.nice {
            (r.match_nice, (r.nice_min, r.nice_max)) = (1, n.bounds());
        }
        if let Some(n) = m.nr_cpus {
            (r.match_nr_cpus, (r.nr_cpus_min, r.nr_cpus_max)) = (1, n.bounds());
        }
        r.class = match self.class {
            Class::Normal => bpf_intf::rule_class_RULE_CLASS_NORMAL,
            Class::Latency => bpf_intf::rule_class_RULE_CLASS_LATENCY,
            Class::Batch => bpf_intf::rule_class_RULE_CLASS_BATCH,
        };
        r.preempt = match self.may_preempt {
            None => bpf_intf::rule_preempt_RULE_PREEMPT_CLASS,
            Some(true) => bpf_intf::rule_preempt_RULE_PREEMPT_YES,
            Some(false) => bpf_intf::rule_preempt_RULE_PREEMPT_NO,
        };
        r.lat_cri_floor = self.lat_cri_floor.unwrap_or(0) as u32;
        r.slice_ns = self.slice_us.unwrap_or(0) * 1000;
        r
    }

    /// Whether the cgroup at `path` (from the hierarchy's root, "/" for the root) is one of
    /// this rule's: the path itself and every cgroup below it, or, ending in `*`, any path that
    /// starts so.
    pub fn cgroup_matches(&self, path: &str) -> bool {
        let Some(want) = self.matches.cgroup.as_deref() else {
            return false;
        };
        match want.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => {
                let want = want.trim_end_matches('/');
                want.is_empty()
                    || path == want
                    || path.strip_prefix(want).is_some_and(|r| r.starts_with('/'))
            }
        }
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// All the rules of a file: each valid, names unique, at most MAX_RULES. Errors name the rule.
pub fn validate(rules: &[Rule], slice_max_us: u64) -> Result<()> {
    if rules.len() > MAX_RULES {
        bail!("{} rules: at most {MAX_RULES}", rules.len());
    }
    for (i, r) in rules.iter().enumerate() {
        r.validate(slice_max_us)
            .with_context(|| format!("rule {} ({:?})", i + 1, r.name))?;
        if rules[..i].iter().any(|o| o.name == r.name) {
            bail!(
                "rule {} ({:?}): a rule of that name comes before",
                i + 1,
                r.name
            );
        }
    }
    Ok(())
}

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or the hybrid layout's unified
/// part.
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

/// For every cgroup under `root` that some rule's cgroup matcher names, its id (the directory's
/// inode number, which is the kernel's cgroup id) and the rules (bit i: rule i) it matches.
pub fn cgroup_bits(root: &Path, rules: &[Rule]) -> HashMap<u64, u32> {
    use std::os::unix::fs::MetadataExt;
    let mut bits = HashMap::new();
    if !rules.iter().any(|r| r.matches.cgroup.is_some()) {
        return bits;
    }
    let mut stack = vec![(root.to_path_buf(), String::from("/"))];
    while let Some((dir, path)) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue; // removed meanwhile
        };
        let b = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.cgroup_matches(&path))
            .fold(0u32, |b, (i, _)| b | 1 << i);
        if b != 0 {
            bits.insert(meta.ino(), b);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                stack.push((e.path(), child));
            }
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<Rule> {
        #[derive(Deserialize)]
        struct F {
            rule: Vec<Rule>,
        }
        let f: F = toml::from_str(toml_text)?;
        let r = f.rule.into_iter().next().unwrap();
        r.validate(5000)?;
        Ok(r)
    }

    #[test]
    fn rules_parse_check_and_lay_out_for_bpf() {
        let r = rule("[[rule]]\nname = \"erlang\"\nmatch = { pcomm = \"beam.smp\", nice = [-5, 0] }\nclass = \"latency\"\nslice-us = 2000\n").unwrap();
        let b = r.to_bpf();
        assert_eq!(&b.pcomm[..9], b"beam.smp\0");
        assert_eq!((b.pcomm_len, b.pcomm_prefix, b.comm_len), (8, 0, 0));
        assert_eq!((b.match_nice, b.nice_min, b.nice_max), (1, -5, 0));
        assert_eq!(b.class, bpf_intf::rule_class_RULE_CLASS_LATENCY);
        assert_eq!(b.slice_ns, 2_000_000);
        assert_eq!(b.match_cgroup, 0);
        let r = rule("[[rule]]\nname = \"s\"\nmatch = { comm = \"1_sched*\", nr-cpus = 1 }\nmay-preempt = false\n").unwrap();
        let b = r.to_bpf();
        assert_eq!((b.comm_len, b.comm_prefix), (7, 1));
        assert_eq!((b.nr_cpus_min, b.nr_cpus_max), (1, 1));
        assert_eq!(b.preempt, bpf_intf::rule_preempt_RULE_PREEMPT_NO);
        assert_eq!(b.class, bpf_intf::rule_class_RULE_CLASS_NORMAL);
        for (bad, says) in [
            ("name = \"x\"\nmatch = {}\n", "match is empty"),
            (
                "name = \"x\"\nmatch = { comm = \"a-name-too-long-for-comm\" }\n",
                "comm",
            ),
            ("name = \"x\"\nmatch = { comm = \"*\" }\n", "comm"),
            (
                "name = \"x\"\nmatch = { cgroup = \"batch\" }\n",
                "cgroup \"batch\"",
            ),
            ("name = \"x\"\nmatch = { nice = [5, -5] }\n", "nice 5..-5"),
            ("name = \"x\"\nmatch = { nice = 20 }\n", "nice 20"),
            ("name = \"x\"\nmatch = { nr-cpus = 0 }\n", "nr-cpus"),
            (
                "name = \"x\"\nmatch = { uid = 0 }\nslice-us = 9000\n",
                "slice-us 9000",
            ),
            (
                "name = \"x\"\nmatch = { uid = 0 }\nlat-cri-floor = 28\n",
                "lat-cri-floor 28",
            ),
            ("name = \"a b\"\nmatch = { uid = 0 }\n", "name"),
            (
                "name = \"x\"\nmatch = { exe = \"/usr/bin/x\" }\n",
                "unknown field `exe`",
            ),
            (
                "name = \"x\"\nmatch = { uid = 0 }\nclass = \"realtime\"\n",
                "unknown variant",
            ),
        ] {
            let e = rule(&format!("[[rule]]\n{bad}")).expect_err(bad);
            assert!(format!("{e:#}").contains(says), "{bad}: {e:#}");
        }
    }

    #[test]
    fn rule_lists_are_bounded_and_named_once() {
        let r = rule("[[rule]]\nname = \"a\"\nmatch = { uid = 1 }\n").unwrap();
        assert!(validate(&[r.clone(), r.clone()], 5000)
            .unwrap_err()
            .to_string()
            .contains("comes before"));
        let many: Vec<Rule> = (0..=MAX_RULES)
            .map(|i| Rule {
                name: format!("r{i}"),
                ..r.clone()
            })
            .collect();
        assert!(validate(&many, 5000).is_err());
        assert!(validate(&many[..MAX_RULES], 5000).is_ok());
    }

    #[test]
    fn cgroup_paths_match_themselves_and_below() {
        let r = |c: &str| Rule {
            name: "x".into(),
            matches: Match {
                cgroup: Some(c.into()),
                ..Match::default()
            },
            class: Class::Batch,
            slice_us: None,
            lat_cri_floor: None,
            may_preempt: None,
        };
        let batch = r("/batch.slice");
        assert!(batch.cgroup_matches("/batch.slice"));
        assert!(batch.cgroup_matches("/batch.slice/job-1.scope"));
        assert!(!batch.cgroup_matches("/batch.slice-other"));
        assert!(!batch.cgroup_matches("/"));
        let glob = r("/user.slice/user-*");
        assert!(glob.cgroup_matches("/user.slice/user-1000.slice"));
        assert!(!glob.cgroup_matches("/user.slice"));
        assert!(r("/").cgroup_matches("/anything"));
        // A directory tree as the kernel's cgroup2 is: ids are inode numbers.
        let root = std::env::temp_dir().join(format!("concord-cg-{}", std::process::id()));
        std::fs::create_dir_all(root.join("batch.slice/job")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        let bits = cgroup_bits(&root, &[r("/other"), batch.clone()]);
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        assert_eq!(bits.get(&ino("batch.slice")), Some(&0b10));
        assert_eq!(bits.get(&ino("batch.slice/job")), Some(&0b10));
        assert_eq!(bits.get(&ino("other")), Some(&0b01));
        assert_eq!(bits.len(), 3);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
