//! criterion micro-benchmarks live in `benches/`; run `cargo bench -p mesh-micro-benches`.
