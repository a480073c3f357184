//! A progress bar for long runs, drawn on stdout only when a person is
//! watching: hidden under `--quiet` and whenever stdout is not a terminal (a
//! pipe, a file, CI), so logs and scripts see only the report.
//!
//! Owns: the bar's look and its visibility rule, and the driver's
//! [`DriveProgress`] drawn on it. Must never: be updated per record on a
//! measuring path — callers set the position at most every
//! [`PROGRESS_UPDATE_MS`] (indicatif also rate-limits drawing).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use traffic::drive::DriveProgress;
/// How often a measuring loop should update the bar: the driver's pace.
pub use traffic::drive::PROGRESS_UPDATE_MS;
/// Redraws per second at most.
const PROGRESS_REFRESH_HZ: u8 = 10;

/// Whether the caller asked for silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Show the bar when stdout is a terminal.
    Normal,
    /// Never show it (`--quiet`).
    Quiet,
}

/// A counting progress bar (cheap to clone; clones share the bar).
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar counting to `total` `unit`s, drawn on stdout if `verbosity` and
    /// the terminal allow.
    pub fn new(total: u64, unit: &str, verbosity: Verbosity) -> Progress {
        let visible = verbosity == Verbosity::Normal && std::io::stdout().is_terminal();
        Progress::with_visibility(total, unit, visible)
    }

    /// A bar that draws nothing (for library callers and tests).
    pub fn hidden() -> Progress {
        Progress::with_visibility(0, "", false)
    }

    fn with_visibility(total: u64, unit: &str, visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stdout_with_hz(PROGRESS_REFRESH_HZ)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let template = format!(
            "{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    /// True if the bar is drawn anywhere.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Sets the count to reach.
    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// Sets the count done so far.
    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// Adds to the count done.
    pub fn add(&self, done: u64) {
        self.bar.inc(done);
    }

    /// A short status after the counts.
    pub fn message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Leaves the bar in place with its final count.
    pub fn finish(&self) {
        self.bar.finish();
    }

    /// Removes the bar from the terminal.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// The driver's progress on the bar: records sent as the count, outcomes as
/// the message.
impl DriveProgress for Progress {
    fn update(&self, sent: u64, outcomes: u64) {
        self.set(sent);
        self.message(format!("{outcomes} outcomes"));
    }

    fn finish(&self) {
        Progress::finish(self);
    }

    fn close(&self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_and_non_terminal_bars_are_hidden() {
        assert!(!Progress::new(10, "records", Verbosity::Quiet).is_visible());
        assert!(!Progress::hidden().is_visible());
        // Under `cargo test` stdout is captured, not a terminal.
        if !std::io::stdout().is_terminal() {
            assert!(!Progress::new(10, "records", Verbosity::Normal).is_visible());
        }
        let progress = Progress::hidden();
        progress.add(3);
        progress.set(7);
        progress.finish();
    }

    #[test]
    fn the_drivers_progress_counts_records_sent_on_the_bar() {
        let progress = Progress::hidden();
        let driver: &dyn DriveProgress = &progress;
        driver.update(40, 12);
        assert_eq!(progress.bar.position(), 40);
        assert_eq!(progress.bar.message(), "12 outcomes");
        driver.finish();
        assert!(progress.bar.is_finished());
    }
}
