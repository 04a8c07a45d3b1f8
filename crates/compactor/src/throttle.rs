//! The IO budget: the token bucket now lives in [`runtime::throttle`] (flushers pace with
//! it too); re-exported here for the compactor's modules.

pub use runtime::throttle::RateLimiter;
