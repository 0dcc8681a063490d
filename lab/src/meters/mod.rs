//! Meters that work under every scheduler, EEVDF included: wasted cores (from the kernel's
//! scheduler tracepoints), the BPF cost of sched_ext callbacks (from the kernel's BPF stats),
//! the IPIs that kicks cost (from /proc/interrupts) and the stalls in which a CPU executed
//! nothing (from the IPI and interrupt tracepoints).
pub mod bpfcost;
pub mod heatmap;
pub mod ipis;
pub mod stalls;
pub mod waits;
pub mod wasted;
