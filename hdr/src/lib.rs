//! `hdr`: HDR latency histograms written the way operators and HdrHistogram's
//! own tools read them. Both the engine's report (`tradeflow run`'s `.hgrm`
//! files and `/reports/hdr`, in `services::observe`) and the load
//! generator's reports (`loadgen`) write their distributions through it, so
//! that the production binary does not link the load generator for a text
//! format.
//!
//! | module | owns |
//! |---|---|
//! | [`hgrm`] | the `.hgrm` percentile distribution, Java's `PercentileIterator` steps, Java's fixed-point rounding |
//!
//! Lives on whichever thread writes a report; it only reads histograms that
//! their recorder has handed over.
//!
//! **Architecture invariant:** `hdr` records nothing and knows no Kafka, no
//! engine and no flow: a histogram in, text out.

pub mod hgrm;
