//! Rate limiting that holds its promise per Envoy process (issue 4, in
//! progress): [`gcra`] runs governor's GCRA over Envoy shared data, so every
//! worker VM counts against the same buckets.

pub mod gcra;
