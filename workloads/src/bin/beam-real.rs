//! beam-real: a real Erlang/OTP VM under open-loop load (see `erlang` in the library).
//! `beam-real calibrate` prints one request's service time alone; `beam-real run` offers a load
//! (a share of the bound CPUs) and writes the report.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use concord_workloads::erlang::{self, BusyWait, ErlangConfig};
use concord_workloads::{sys, write_json};
use std::path::PathBuf;

/// A real BEAM (schedulers bound with +sbt db, busy wait as +sbwt) serving open-loop requests.
#[derive(Parser)]
#[command(version, about)]
struct Opts {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time one request's work alone (median of 31 runs) and print it in µs.
    Calibrate(Common),
    /// Serve requests at --load of the schedulers' CPUs and report latencies.
    Run {
        #[command(flatten)]
        common: Common,
        /// Offered load: request work as a share of the schedulers' CPUs (0.7 = 70 %).
        #[arg(long, default_value_t = 0.6)]
        load: f64,
        /// One request's service time alone, µs (default: calibrate first).
        #[arg(long)]
        service_us: Option<f64>,
        /// Seconds of arrivals.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Arrivals in the first seconds are not measured.
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        /// Seconds the VM gets to finish measured requests after the last arrival.
        #[arg(long, default_value_t = 10.0)]
        drain_secs: f64,
        /// Write the full report (with the latency histogram) here; `-` for stdout.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Args)]
struct Common {
    /// Scheduler threads (default: one per CPU this process may use).
    #[arg(long)]
    schedulers: Option<usize>,
    /// Leave scheduler threads unbound (default: `+sbt db`, one bound per CPU).
    #[arg(long)]
    unbound: bool,
    /// Idle schedulers' busy wait (`+sbwt`); ERTS spins with sched_yield before it sleeps.
    #[arg(long, value_enum, default_value_t = BusyWait::Short)]
    busy_wait: BusyWait,
    /// Reductions (function calls) per request; the BEAM switches processes every ~4000.
    #[arg(long, default_value_t = 20000)]
    reductions: u64,
    /// Processes generating requests (the rate is shared among them).
    #[arg(long)]
    generators: Option<usize>,
    /// Directory for the script and its output.
    #[arg(long, default_value = "/tmp")]
    tmp: PathBuf,
}

impl Common {
    fn config(&self, secs: f64, warmup_secs: f64, drain_secs: f64) -> Result<ErlangConfig> {
        let n = match self.schedulers {
            Some(n) => n,
            None => sys::allowed_cpus()?.len(),
        };
        let cfg = ErlangConfig {
            schedulers: n,
            bound: !self.unbound,
            busy_wait: self.busy_wait,
            reductions: self.reductions,
            generators: self.generators.unwrap_or(n),
            secs,
            warmup_secs,
            drain_secs,
        };
        cfg.check()?;
        Ok(cfg)
    }
}

fn main() -> Result<()> {
    match Opts::parse().cmd {
        Cmd::Calibrate(c) => {
            let cfg = c.config(10.0, 1.0, 10.0)?;
            println!("{:.1}", erlang::calibrate(&cfg, &c.tmp)?);
        }
        Cmd::Run {
            common,
            load,
            service_us,
            secs,
            warmup_secs,
            drain_secs,
            json,
        } => {
            let cfg = common.config(secs, warmup_secs, drain_secs)?;
            let service = match service_us {
                Some(s) if s > 0.0 => s,
                Some(_) => anyhow::bail!("--service-us must be positive"),
                None => erlang::calibrate(&cfg, &common.tmp)?,
            };
            let r = erlang::run(&cfg, load, service, &common.tmp)?;
            let wait: f64 = r.schedulers.iter().map(|t| t.wait_ms).sum();
            println!(
                "beam-real: OTP {}, {} schedulers ({}), load {:.0} % = {:.0} req/s of {:.0} µs: \
                 p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms, {:.0} req/s done, \
                 {} unfinished, schedulers' run-queue delay {:.1} ms",
                r.otp_release,
                cfg.schedulers,
                cfg.erl_flags(),
                load * 100.0,
                r.rate,
                service,
                r.p50_us / 1e3,
                r.p99_us / 1e3,
                r.p999_us / 1e3,
                r.max_us / 1e3,
                r.throughput_rps,
                r.unfinished,
                wait
            );
            if let Some(p) = json {
                write_json(&p, &r)?;
            }
        }
    }
    Ok(())
}
