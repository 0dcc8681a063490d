//! Meters that work under every scheduler, EEVDF included: wasted cores (from the kernel's
//! scheduler tracepoints) and the BPF cost of sched_ext callbacks (from the kernel's BPF stats).
pub mod bpfcost;
pub mod heatmap;
pub mod waits;
pub mod wasted;
