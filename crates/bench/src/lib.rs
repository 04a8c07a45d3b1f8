//! The benchmark harness's workloads, each measured through the real services. Used by the
//! `dp-bench` binary and by the `cargo bench` targets that `make bench` runs.

pub mod scheduler;
