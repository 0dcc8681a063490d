//! What the host and the guest runner exchange: the job (written by the host into the run
//! directory, shared read-write with the guest), the result (written back by the guest), and
//! marker lines on the command console that tell the host which stage the guest reached.

use concord_common::sched::SchedSpec;
use concord_common::topology::TopologySpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Lines starting with this on the command console are the lab's, not the command's.
pub const MARKER: &str = "@@concord-lab@@ ";

pub const JOB_FILE: &str = "job.json";
pub const RESULT_FILE: &str = "result.json";
pub const SCHED_LOG: &str = "sched.log";
pub const DMESG_FILE: &str = "dmesg.txt";
pub const KERNEL_CONSOLE: &str = "console.log";
pub const OUTPUT_FILE: &str = "output.log";

/// Exit codes of `concord-lab vm` besides the command's own.
pub mod exit {
    /// The VM or command ran past `--timeout`.
    pub const TIMEOUT: i32 = 124;
    /// The lab could not run the command: boot, topology or scheduler start failed.
    pub const LAB_ERROR: i32 = 125;
    /// The command finished but the scheduler failed while it ran (detached or exited non-zero).
    pub const SCHED_FAILED: i32 = 126;
    /// The command does not exist in the guest.
    pub const NOT_FOUND: i32 = 127;
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub cmd: Vec<String>,
    pub sched: SchedSpec,
    /// Path of the scheduler binary on the host (seen at the same path in the guest).
    pub sched_binary: Option<PathBuf>,
    pub sched_attach_timeout_s: u64,
    pub topology: TopologySpec,
    pub kernel_config: Option<PathBuf>,
    /// Directories put first on the guest's PATH (workspace binaries, peer schedulers).
    pub path_prepend: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SchedReport {
    pub label: String,
    pub attach_secs: f64,
    /// Still attached (state `enabled`, ops ours, process alive) when the command ended.
    pub attached_at_end: bool,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// The kernel's reason when the scheduler was disabled (from the guest kernel log).
    pub exit_reason: Option<String>,
    pub state_after: String,
}

impl SchedReport {
    /// One line: attach time, whether it was still attached, how it exited and why.
    pub fn summary(&self) -> String {
        format!(
            "{}: attached after {:.1} s, {} at the end, exit {}{}, state now {}",
            self.label,
            self.attach_secs,
            if self.attached_at_end {
                "still attached"
            } else {
                "NOT attached"
            },
            self.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| format!("by signal {:?}", self.exit_signal)),
            self.exit_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            self.state_after
        )
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GuestResult {
    pub exit_code: i32,
    pub cmd_exit: Option<i32>,
    pub error: Option<String>,
    pub kernel_release: String,
    pub sched: Option<SchedReport>,
    /// BUG/WARNING/stall lines found in the guest kernel log.
    pub klog_problems: Vec<String>,
    pub cmd_secs: f64,
}
