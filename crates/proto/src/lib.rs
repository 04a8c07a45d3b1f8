//! The `dataprocessor.v1` gRPC contract, generated at build time from `proto/`.
//!
//! Proto types stay at the gRPC edge: services convert them into their own domain types
//! before any logic sees them.

#![expect(clippy::all, reason = "generated code")]

/// Generated messages, clients and servers of `dataprocessor.v1`.
pub mod v1 {
    tonic::include_proto!("dataprocessor.v1");
}

/// Encoded `FileDescriptorSet` of the contract (with comments), for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("dataprocessor_descriptor");

pub use v1::*;
