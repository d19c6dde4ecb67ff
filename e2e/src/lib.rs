//! The local Envoy harness.

pub mod crd;
