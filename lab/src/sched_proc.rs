//! A scheduler process in the guest, started the one way the lab starts them: the `vm` job's
//! scheduler (`guest.rs`) and the scx_concord a reliability check starts itself
//! (`reliability/harness.rs`). Its output goes line by line to a log file and, when asked, to
//! the console; attach is awaited by sched_ext's own state and ops name; it is stopped by a
//! signal within a time limit, and killed past it.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::guest::{console_line, ops_matches, sched_ops, sched_state};

pub struct SchedProcess {
    child: Child,
    log: PathBuf,
    relays: Vec<JoinHandle<()>>,
}

/// How waiting for the attach ended.
pub enum Attach {
    /// sched_ext enabled with the expected ops, after these seconds.
    Attached(f64),
    /// The process ended first.
    Exited(ExitStatus),
    TimedOut,
}

impl SchedProcess {
    /// Starts `prog args` (as `uid`, its own group, when given) with its stdout and stderr
    /// written to `log` line by line, and with `console` = Some(prefix) also shown on the
    /// console as `[prefix] line`.
    pub fn spawn(
        prog: &Path,
        args: &[String],
        log: &Path,
        uid: Option<u32>,
        console: Option<String>,
    ) -> Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let file = Arc::new(Mutex::new(file));
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", prog.display()))?;
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        let relays = streams
            .into_iter()
            .map(|stream| {
                let file = file.clone();
                let console = console.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        let _ = writeln!(file.lock().unwrap(), "{line}");
                        if let Some(prefix) = &console {
                            console_line(&format!("[{prefix}] {line}"));
                        }
                    }
                })
            })
            .collect();
        Ok(Self {
            child,
            log: log.to_path_buf(),
            relays,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited yet.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, sig: i32) {
        crate::util::signal_child(&self.child, sig);
    }

    /// What it has written so far (all of it once it has been finished or stopped).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn join_relays(&mut self) {
        for r in self.relays.drain(..) {
            let _ = r.join();
        }
    }

    /// Waits until sched_ext is enabled with ops `ops` (scx_utils' version suffix allowed),
    /// the process exits, or `limit` passes (the process is left running then).
    pub fn wait_attached(&mut self, ops: &str, limit: Duration) -> Attach {
        let t0 = Instant::now();
        loop {
            if sched_state() == "enabled" && ops_matches(&sched_ops(), ops) {
                return Attach::Attached(t0.elapsed().as_secs_f64());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.join_relays();
                return Attach::Exited(st);
            }
            if t0.elapsed() > limit {
                return Attach::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs to its end, at most `limit` (then SIGKILL): the exit status (None: it had to be
    /// killed) and its whole output.
    pub fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        let t0 = Instant::now();
        let st = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if t0.elapsed() <= limit => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        self.join_relays();
        (st, self.output())
    }

    /// Sends `sig` (unless it has exited already) and finishes it within `limit`.
    pub fn stop_with(mut self, sig: i32, limit: Duration) -> (Option<ExitStatus>, String) {
        if self.alive() {
            self.signal(sig);
        }
        self.finish(limit)
    }
}

/// A connection to scx_concord's stats when it is the attached scheduler (None under any other),
/// its reader opened by a first request: what it reports next are differences since now (the
/// since-attach maxima excepted, which are absolute).
pub fn concord_stats() -> Result<Option<scx_stats::prelude::StatsClient>> {
    if sched_state() != "enabled"
        || !ops_matches(&sched_ops(), concord_common::sched::CONCORD_OPS_NAME)
    {
        return Ok(None);
    }
    let mut c = scx_stats::prelude::StatsClient::new()
        .connect(Some(5000))
        .context("connecting to scx_concord's stats socket")?;
    read_stats(&mut c)?;
    Ok(Some(c))
}

pub fn read_stats(c: &mut scx_stats::prelude::StatsClient) -> Result<serde_json::Value> {
    c.request::<serde_json::Value>("stats", vec![])
        .context("reading scx_concord's stats")
}
