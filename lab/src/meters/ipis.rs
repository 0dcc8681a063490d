//! Inter-processor interrupts, the cost of kicks that every scheduler pays alike: a sched_ext
//! scheduler's `scx_bpf_kick_cpu` and EEVDF's wake-up preemption of a remote CPU both end in a
//! rescheduling IPI (`RES` in /proc/interrupts), and remote wake-ups queued to another CPU's
//! list in a function-call IPI (`CAL`). Counted around the load in the guest, per CPU, so
//! machines of different sizes under the same load per CPU compare directly.

use serde::{Deserialize, Serialize};

/// Sums of the per-CPU counts of the two IPI kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ipis {
    pub resched: u64,
    pub call: u64,
}

impl Ipis {
    /// Read from /proc/interrupts' text: the `RES:` and `CAL:` rows, their numeric columns
    /// (one per CPU) summed; a row absent counts 0.
    pub fn parse(text: &str) -> Ipis {
        let row = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.trim_start().strip_prefix(name))
                .map(|rest| {
                    rest.split_whitespace()
                        .map_while(|w| w.parse::<u64>().ok())
                        .sum()
                })
                .unwrap_or(0)
        };
        Ipis {
            resched: row("RES:"),
            call: row("CAL:"),
        }
    }

    pub fn read() -> std::io::Result<Ipis> {
        Ok(Ipis::parse(&std::fs::read_to_string("/proc/interrupts")?))
    }

    /// The counts from `before` to `self` (counters never go back; saturate if they did).
    pub fn since(&self, before: &Ipis) -> Ipis {
        Ipis {
            resched: self.resched.saturating_sub(before.resched),
            call: self.call.saturating_sub(before.call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_each_cpus_column_of_the_ipi_rows() {
        let text = "           CPU0       CPU1       CPU2\n  0:         41          0          0  IR-IO-APIC    2-edge      timer\nLOC:     123456     234567     345678   Local timer interrupts\nRES:        120         30          5   Rescheduling interrupts\nCAL:       1000         20          3   Function call interrupts\nTLB:          7          8          9   TLB shootdowns\n";
        let i = Ipis::parse(text);
        assert_eq!(
            i,
            Ipis {
                resched: 155,
                call: 1023
            }
        );
        let later = Ipis {
            resched: 200,
            call: 1023,
        };
        assert_eq!(
            later.since(&i),
            Ipis {
                resched: 45,
                call: 0
            }
        );
        assert_eq!(Ipis::parse("nothing"), Ipis::default());
    }
}
