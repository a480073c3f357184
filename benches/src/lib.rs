//! Benchmarks for tradeflow; the library is empty and the benchmarks live in
//! `benches/` (`cargo bench -p tradeflow-benches --bench codecs`). Owns no
//! code the engine or services use and must never become a dependency of them.
