//! Meters that work under every scheduler, EEVDF included: wasted cores (from the kernel's
//! scheduler tracepoints), the BPF cost of sched_ext callbacks (from the kernel's BPF stats)
//! and the IPIs that kicks cost (from /proc/interrupts).
pub mod bpfcost;
pub mod heatmap;
pub mod ipis;
pub mod waits;
pub mod wasted;
