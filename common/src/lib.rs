//! Concepts shared by scx_concord, concord-lab and the workloads, defined once.
pub mod hist;
pub mod sched;
pub mod topology;
