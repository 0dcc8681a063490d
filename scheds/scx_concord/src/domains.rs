//! Each scheduling domain's CPUs as one flat list (the BPF side's `domain_cpu_list`): wake-up
//! preemption and the idle kicks walk the CPUs of the task's domain, not every CPU id from
//! the task's own onwards. Walking ids skipped LLC members numbered below the start and, on
//! machines whose SMT siblings are numbered half the CPUs away, looked at at most 64 CPUs that
//! were mostly other LLCs'.

use scx_utils::Topology;

/// The machine as the BPF side is told it: each LLC's CPU ids (in a dense LLC order), the node
/// of each LLC, and the size of the per-CPU tables. Read from the kernel's topology, or made up
/// for `--check-policy` to walk a big machine's CPU lists on a small one.
#[derive(Debug, Clone)]
pub struct Layout {
    pub llcs: Vec<Vec<usize>>,
    pub llc_node: Vec<u32>,
    pub nr_cpu_ids: usize,
    pub nr_nodes: usize,
    pub smt: bool,
}

impl Layout {
    pub fn of_topology(topo: &Topology, nr_cpu_ids: usize) -> Self {
        Layout {
            llcs: topo
                .all_llcs
                .values()
                .map(|l| l.all_cpus.keys().copied().collect())
                .collect(),
            llc_node: topo.all_llcs.values().map(|l| l.node_id as u32).collect(),
            nr_cpu_ids,
            nr_nodes: topo.nodes.len(),
            smt: topo.smt_enabled,
        }
    }

    /// `nodes` x `llcs` per node x `cores` per LLC x `threads` per core, numbered as x86
    /// servers number them: first threads of all cores, then second threads (a core's SMT
    /// sibling is the number of cores away), so an LLC's CPUs are two runs of ids.
    pub fn synthetic(nodes: usize, llcs: usize, cores: usize, threads: usize) -> Self {
        let nr_cores = nodes * llcs * cores;
        let llc_cpus = (0..nodes * llcs)
            .map(|l| {
                (0..threads)
                    .flat_map(|t| (0..cores).map(move |c| t * nr_cores + l * cores + c))
                    .collect()
            })
            .collect();
        Layout {
            llcs: llc_cpus,
            llc_node: (0..nodes * llcs).map(|l| (l / llcs) as u32).collect(),
            nr_cpu_ids: nr_cores * threads,
            nr_nodes: nodes,
            smt: threads > 1,
        }
    }

    pub fn nr_cpus(&self) -> usize {
        self.llcs.iter().map(Vec::len).sum()
    }
}

/// The domains' CPUs grouped per domain (`list[first[d]..first[d] + count[d]]`), and each
/// CPU's position in its domain's group (`pos[cpu]`).
#[derive(Debug, PartialEq)]
pub struct DomainLists {
    pub list: Vec<u32>,
    pub first: Vec<u32>,
    pub count: Vec<u32>,
    pub pos: Vec<u32>,
}

/// `llcs`: each LLC's CPU ids in the BPF side's dense LLC order. `global`: one domain holds
/// every CPU (the global queue). `nr_cpu_ids`: size of the per-CPU table.
pub fn domain_lists(llcs: &[Vec<usize>], global: bool, nr_cpu_ids: usize) -> DomainLists {
    let domains: Vec<Vec<usize>> = if global {
        let mut all: Vec<usize> = llcs.iter().flatten().copied().collect();
        all.sort_unstable();
        vec![all]
    } else {
        llcs.iter()
            .map(|c| {
                let mut c = c.clone();
                c.sort_unstable();
                c
            })
            .collect()
    };
    let mut l = DomainLists {
        list: Vec::new(),
        first: Vec::new(),
        count: Vec::new(),
        pos: vec![0; nr_cpu_ids],
    };
    for cpus in &domains {
        l.first.push(l.list.len() as u32);
        l.count.push(cpus.len() as u32);
        for (i, &cpu) in cpus.iter().enumerate() {
            if cpu < nr_cpu_ids {
                l.pos[cpu] = i as u32;
            }
            l.list.push(cpu as u32);
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_domain_lists_its_own_cpus_and_each_cpu_knows_its_place() {
        // Two LLCs whose SMT siblings are numbered 4 apart: LLC 0 = {0, 1, 4, 5}.
        let llcs = vec![vec![0, 1, 4, 5], vec![7, 2, 3, 6]];
        let l = domain_lists(&llcs, false, 8);
        assert_eq!(l.list, vec![0, 1, 4, 5, 2, 3, 6, 7]);
        assert_eq!(l.first, vec![0, 4]);
        assert_eq!(l.count, vec![4, 4]);
        for (d, cpus) in llcs.iter().enumerate() {
            for &c in cpus {
                let at = (l.first[d] + l.pos[c]) as usize;
                assert_eq!(l.list[at], c as u32, "cpu {c} found at its position");
            }
        }
    }

    #[test]
    fn a_synthetic_server_numbers_smt_siblings_a_socket_apart() {
        let l = Layout::synthetic(2, 4, 11, 2);
        assert_eq!((l.nr_cpu_ids, l.nr_cpus(), l.llcs.len()), (176, 176, 8));
        assert_eq!(l.llcs[0][..2], [0, 1]);
        assert_eq!(l.llcs[0][11..13], [88, 89], "core 0's sibling is 88 away");
        assert_eq!(l.llc_node, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        let mut all: Vec<usize> = l.llcs.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..176).collect::<Vec<_>>(), "each CPU in one LLC");
    }

    #[test]
    fn the_global_queue_is_one_domain_of_every_cpu() {
        let l = domain_lists(&[vec![2, 3], vec![0, 1]], true, 4);
        assert_eq!(l.list, vec![0, 1, 2, 3]);
        assert_eq!((l.first.clone(), l.count.clone()), (vec![0], vec![4]));
        assert_eq!(l.pos, vec![0, 1, 2, 3]);
    }
}
