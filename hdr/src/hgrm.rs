//! The `.hgrm` percentile distribution: the text HdrHistogram's Java
//! `outputPercentileDistribution` prints and its plotters and HistogramLogAnalyzer
//! read — byte for byte, checked against files written by HdrHistogram 2.2.2
//! (`tests/data/*.hgrm`, made by `tests/data/Golden.java`).
//!
//! The rows come from [`percentile_steps`], a transcription of Java's
//! `PercentileIterator`, not from the Rust crate's `iter_quantiles`: the crate
//! steps in quantiles (0..1) where Java steps in percent (0..100), and the
//! different float rounding picks a different bucket whenever a running count
//! lands exactly on a step (with 40 000 values, 35 000 is exactly 87.5%).
//!
//! Owns: formatting one histogram. Must never: change the column layout — tools
//! parse it by position.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile ticks per half distance to 100%, as the Java default (5).
pub const PERCENTILE_TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Nanoseconds per microsecond: `.hgrm` files are written in microseconds.
pub const NS_PER_US: f64 = 1_000.0;

/// Writes `histogram` (values in nanoseconds) as a percentile distribution
/// with values divided by `value_scale` (use [`NS_PER_US`] for microseconds).
pub fn percentile_distribution(histogram: &Histogram<u64>, value_scale: f64) -> String {
    let digits = usize::from(histogram.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for step in percentile_steps(histogram, PERCENTILE_TICKS_PER_HALF_DISTANCE) {
        let value = java_fixed(step.value as f64 / value_scale, digits);
        let quantile = step.percentile / 100.0;
        let total = step.total_count;
        let _ = write!(
            out,
            "{value:>12} {:>2} {total:>10}",
            java_fixed(quantile, 12)
        );
        if step.percentile != 100.0 {
            let _ = write!(out, " {:>14}", java_fixed(1.0 / (1.0 - quantile), 2));
        }
        out.push('\n');
    }
    let max = if histogram.is_empty() {
        0.0
    } else {
        histogram.max() as f64 / value_scale
    };
    let _ = writeln!(
        out,
        "#[Mean    = {:>12}, StdDeviation   = {:>12}]",
        java_fixed(histogram.mean() / value_scale, digits),
        java_fixed(histogram.stdev() / value_scale, digits)
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12}, Total count    = {:>12}]",
        java_fixed(max, digits),
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        sub_bucket_count(histogram.sigfig())
    );
    out
}

/// `x` with `decimals` digits after the point, as Java's `%.Nf` writes it:
/// Java rounds the *shortest* decimal form of the double half-up (so 0.15
/// becomes "0.2"), where Rust rounds the exact binary value half-to-even.
pub fn java_fixed(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Shortest round-trip digits and exponent: d.ddd × 10^exp.
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exp) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    // Align so that `digits[..int_len]` is the integer part (at least one digit).
    let mut int_len = exp + 1;
    if int_len < 1 {
        let zeros = usize::try_from(1 - int_len).unwrap_or(0);
        digits.splice(0..0, std::iter::repeat_n(0, zeros));
        int_len = 1;
    }
    let int_len = usize::try_from(int_len).unwrap_or(1);
    let keep = int_len + decimals;
    if digits.len() > keep {
        let round_up = digits[keep] >= 5;
        digits.truncate(keep);
        if round_up {
            let mut i = keep;
            loop {
                if i == 0 {
                    digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if digits[i] == 9 {
                    digits[i] = 0;
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
    } else {
        digits.resize(keep, 0);
    }
    let int_len = digits.len() - decimals;
    let mut out = String::with_capacity(digits.len() + 2);
    if x.is_sign_negative() && digits.iter().any(|d| *d != 0) {
        out.push('-');
    }
    for (i, d) in digits.iter().enumerate() {
        if i == int_len {
            out.push('.');
        }
        out.push(char::from(b'0' + d));
    }
    out
}

/// One row of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentileStep {
    /// Highest value equivalent to the bucket reached, as recorded (ns).
    pub value: u64,
    /// The percentile level stepped to, 0 to 100.
    pub percentile: f64,
    /// Values recorded at or below `value`.
    pub total_count: u64,
}

/// The rows of Java's `PercentileIterator`: percentile levels in fixed-size
/// ticks per half distance to 100% (0, 10, …, 50, 55, …, 75, 77.5, …), each
/// reported at the first bucket whose running count reaches it, then one last
/// row at 100%.
pub fn percentile_steps(
    histogram: &Histogram<u64>,
    ticks_per_half_distance: u32,
) -> Vec<PercentileStep> {
    let total = histogram.len();
    let mut steps = Vec::new();
    if total == 0 || ticks_per_half_distance == 0 {
        return steps;
    }
    let mut buckets = histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()));
    let mut current: Option<(u64, u64)> = None; // (value, running count) of the bucket reached
    let mut level = 0.0f64;
    let mut reached_last = false;
    loop {
        // Java's hasNext(): more counts to walk, or one last step to 100%.
        let walked = current.map_or(0, |(_, count)| count);
        if walked >= total {
            if reached_last {
                break;
            }
            level = 100.0;
            reached_last = true;
        }
        // Java's next(): walk buckets until the running percentile reaches the level.
        loop {
            if let Some((value, count)) = current {
                if 100.0 * count as f64 / total as f64 >= level {
                    steps.push(PercentileStep {
                        value,
                        percentile: level,
                        total_count: count,
                    });
                    break;
                }
            }
            let Some((value, count)) = buckets.next() else {
                return steps; // counts exhausted below the level (Java throws here)
            };
            current = Some((value, walked_plus(current, count)));
        }
        // Java's incrementIterationLevel().
        let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as u32;
        let ticks = u64::from(ticks_per_half_distance) << (halvings.min(52) + 1);
        level += 100.0 / ticks as f64;
    }
    steps
}

/// The running count after adding a bucket of `count` values.
fn walked_plus(current: Option<(u64, u64)>, count: u64) -> u64 {
    current.map_or(0, |(_, walked)| walked) + count
}

/// The number of sub-buckets per bucket for `sigfig` significant digits, as
/// HdrHistogram computes it (the crate keeps it private): the smallest power of
/// two that resolves 2 × 10^sigfig single units.
fn sub_bucket_count(sigfig: u8) -> u64 {
    let single_unit_resolution = 2 * 10u64.pow(u32::from(sigfig));
    single_unit_resolution.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_rounds_like_java() {
        assert_eq!(java_fixed(0.15, 1), "0.2"); // Rust's {:.1} gives "0.1"
        assert_eq!(java_fixed(0.9997802734375, 12), "0.999780273438");
        assert_eq!(java_fixed(1.0, 2), "1.00");
        assert_eq!(java_fixed(9.9996, 3), "10.000");
        assert_eq!(java_fixed(0.0, 3), "0.000");
        assert_eq!(java_fixed(1_500_512.255, 3), "1500512.255");
        assert_eq!(java_fixed(0.000_4, 3), "0.000");
        assert_eq!(java_fixed(0.000_5, 3), "0.001");
        assert_eq!(java_fixed(1e20, 1), "100000000000000000000.0");
        assert_eq!(java_fixed(-2.5, 0), "-3");
        assert_eq!(java_fixed(f64::INFINITY, 2), "Infinity");
    }

    #[test]
    fn sub_buckets_match_the_java_implementation() {
        assert_eq!(sub_bucket_count(1), 32);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(3), 2048);
        assert_eq!(sub_bucket_count(5), 262_144);
    }

    #[test]
    fn an_empty_histogram_prints_header_and_footer() -> Result<(), hdrhistogram::CreationError> {
        let histogram = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3)?;
        let text = percentile_distribution(&histogram, NS_PER_US);
        assert!(
            text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n#[Mean")
        );
        assert!(text.contains("Total count    =            0]"));
        Ok(())
    }
}
