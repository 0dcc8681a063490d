//! `bad-input`: bad options and config files get one clear error, a non-zero exit and change
//! nothing.

use anyhow::Result;
use std::time::Duration;

use super::harness::{code, error_line, exited_nonzero, run_dir, Concord};
use super::Verdict;
use crate::guest::sched_state;

/// One bad invocation: refused with one clear message, non-zero, nothing loaded.
fn refused(v: &mut Verdict, what: &str, args: &[&str], says: &str) -> Result<()> {
    let c = Concord::spawn(args, "bad-input.log", None)?;
    let (st, out) = c.finish(Duration::from_secs(20));
    let msg = error_line(&out);
    let state = sched_state();
    v.note(format!("{what}: {} — {msg}", code(st)));
    let ok_exit = exited_nonzero(st);
    if !ok_exit || !msg.contains(says) || state != "disabled" || out.lines().count() > 10 {
        v.fail(format!(
            "{what}: want a non-zero exit, one message containing '{says}' and nothing loaded; got {}, state {state}, output: {}",
            code(st),
            out.trim()
        ));
    }
    Ok(())
}

pub(super) fn run(v: &mut Verdict) -> Result<()> {
    for (args, says) in [
        (&["--queue", "per-cpu"][..], "invalid value 'per-cpu'"),
        (&["--pinned-queue", "lavd"], "invalid value 'lavd'"),
        (&["--deadline", "never"], "invalid value 'never'"),
        (&["--slice-max-us", "0"], "--slice-min-us 500 is larger"),
        (&["--slice-max-us", "-5"], "unexpected argument '-5'"),
        (&["--slice-min-us", "10"], "too short"),
        (&["--slice-max-us", "999999999"], "too long"),
        (&["--max-wait-ms", "0"], "at least 1"),
        (&["--max-wait-ms", "99999"], "watchdog"),
        (
            &["--max-wait-ms", "2", "--slice-max-us", "5000"],
            "shorter than one slice",
        ),
        (&["--stats", "0"], "positive number"),
        (&["--monitor", "nan"], "positive number"),
        (&["--debug-error-after-ms", "0"], "at least 1"),
        (&["--exit-dump-len", "lots"], "invalid value 'lots'"),
        (&["--debug-stall-comm", ""], "1 to 15 bytes"),
        (
            &["--debug-stall-comm", "a-name-too-long-for-comm"],
            "1 to 15 bytes",
        ),
        (&["--bogus"], "unexpected argument '--bogus'"),
    ] {
        refused(v, &format!("`{}`", args.join(" ")), args, says)?;
    }
    let dir = run_dir()?;
    for (name, text, says) in [
        ("malformed.toml", "queue = \n", "line 1: invalid string"),
        (
            "unknown.toml",
            "queues = \"global\"\n",
            "line 1: unknown field `queues`",
        ),
        (
            "badvalue.toml",
            "queue = \"per-cpu\"\n",
            "unknown variant `per-cpu`",
        ),
        (
            "badtype.toml",
            "max-wait-ms = [40]\n",
            "invalid type: sequence",
        ),
        ("outofrange.toml", "max-wait-ms = 0\n", "at least 1"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        let p = path.display().to_string();
        refused(
            v,
            &format!("--config {name} ({})", text.trim()),
            &["--config", &p],
            says,
        )?;
    }
    refused(
        v,
        "--config of a missing file",
        &["--config", "/nonexistent/concord.toml"],
        "cannot read it",
    )?;

    Ok(())
}
