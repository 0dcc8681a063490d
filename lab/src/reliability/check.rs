//! The reliability checks by name: one enum for the plan (host), the guest's dispatch and the
//! tests, so a check is named once.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Starvation and fairness among spinners; every wait within the bound.
    Fairness,
    /// No task runs outside its allowed CPUs while masks change under load.
    Affinity,
    /// CPUs go offline and online under load; the scheduler comes back.
    Hotplug,
    /// kill -9, a BPF-side error and SIGINT under load.
    Exits,
    /// Bad options and config files: one clear error, nothing loaded.
    BadInput,
    /// Only root loads or watches the scheduler.
    Access,
    /// The scheduler's memory and CPU time under load.
    Resources,
    /// SCHED_FIFO bursts beside sched_ext load: no stall, waits bounded, local run queues
    /// handed back when the RT task takes the CPU.
    RtMix,
    /// A task the scheduler stops dispatching: the kernel's watchdog ejects it, the exit is
    /// loud and the task then runs under EEVDF.
    Watchdog,
    /// SIGTERM, SysRq-S and a second scheduler under load: documented exits, clean detach.
    Takeover,
    /// 10,000 threads and a fork/exec storm: all progress and exit, waits bounded, the
    /// scheduler's memory flat.
    ManyThreads,
    /// Tasks moved between cpuset cgroups and re-pinned from outside under load: nobody lost,
    /// waits bounded, nothing run outside its mask.
    CgroupMoves,
    /// Spinners at nice -10, 0, 5 and 19 get the share ratios EEVDF gives them in the same VM.
    Nice,
    /// Sibling cgroups share the CPUs as their cpu.weight says, nested too, waits bounded.
    CgroupWeights,
}

impl Check {
    #[cfg(test)]
    pub const ALL: [Check; 14] = [
        Check::Fairness,
        Check::Affinity,
        Check::Hotplug,
        Check::Exits,
        Check::BadInput,
        Check::Access,
        Check::Resources,
        Check::RtMix,
        Check::Watchdog,
        Check::Takeover,
        Check::ManyThreads,
        Check::CgroupMoves,
        Check::Nice,
        Check::CgroupWeights,
    ];

    /// Whether the check holds waits to a bound calibrated in its own VM. Those run under
    /// `-icount`: under multi-threaded TCG the host descheduling a vCPU thread shows up as a
    /// guest wait, and a noisy host fails the calibration (CI met a 73 ms gap there).
    pub fn judges_waits(self) -> bool {
        matches!(
            self,
            Check::Fairness
                | Check::RtMix
                | Check::ManyThreads
                | Check::CgroupMoves
                | Check::Nice
                | Check::CgroupWeights
        )
    }

    /// The name in reports and for `--only` (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            Check::Fairness => "fairness",
            Check::Affinity => "affinity",
            Check::Hotplug => "hotplug",
            Check::Exits => "exits",
            Check::BadInput => "bad-input",
            Check::Access => "access",
            Check::Resources => "resources",
            Check::RtMix => "rt-mix",
            Check::Watchdog => "watchdog",
            Check::Takeover => "takeover",
            Check::ManyThreads => "many-threads",
            Check::CgroupMoves => "cgroup-moves",
            Check::Nice => "nice",
            Check::CgroupWeights => "cgroup-weights",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialized_names() {
        for c in Check::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.name())
            );
        }
        let names: std::collections::HashSet<_> = Check::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Check::ALL.len());
    }
}
