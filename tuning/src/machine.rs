//! The machine a core map is checked against: which CPU numbers exist for us.
//!
//! Owns: [`Machine`], detected from the calling thread's affinity mask or made
//! up by tests, so a core map can be validated for a node it is not running on.
//! Must never: pin or move a thread; it only reads what the OS allows.

use std::collections::BTreeSet;

use crate::ids::{ranges_text, CoreId};
use crate::limits::CORES_MAX;

/// The CPUs this process may run threads on, as CPU numbers.
///
/// Not necessarily `0..n`: under `taskset`, a cgroup cpuset or Kubernetes'
/// static CPU manager a process may be given, say, cores 2-7 only, and a shard
/// can be pinned only to one of those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    cores: BTreeSet<CoreId>,
}

impl Machine {
    /// A machine with cores `0..count` (a fake one, for tests and dry runs).
    pub fn with_cores(count: usize) -> Machine {
        Machine {
            cores: (0..count).map(CoreId).collect(),
        }
    }

    /// A machine with exactly these cores.
    pub fn with_core_ids(cores: impl IntoIterator<Item = CoreId>) -> Machine {
        Machine {
            cores: cores.into_iter().collect(),
        }
    }

    /// The CPUs the **calling thread** may run on: `Cpus_allowed_list` of
    /// `/proc/thread-self/status` on Linux, else cores
    /// `0..available_parallelism()`, else core 0 alone.
    ///
    /// Call it before pinning anything (from `main`, say): once the caller is
    /// pinned to one core, its mask, and so this machine, is that one core.
    pub fn detect() -> Machine {
        ["/proc/thread-self/status", "/proc/self/status"]
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
            .and_then(|status| allowed_cores_in_status(&status))
            .filter(|cores| !cores.is_empty())
            .map(|cores| Machine { cores })
            .unwrap_or_else(|| {
                Machine::with_cores(std::thread::available_parallelism().map_or(1, |n| n.get()))
            })
    }

    pub fn has_core(&self, core: CoreId) -> bool {
        self.cores.contains(&core)
    }

    /// The cores, in ascending order.
    pub fn cores(&self) -> impl Iterator<Item = CoreId> + '_ {
        self.cores.iter().copied()
    }

    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// `0-1` or `2-7, 12`: the cores as operators read them in messages.
    pub fn cores_text(&self) -> String {
        if self.cores.is_empty() {
            return "no cores".to_owned();
        }
        // A core number is below CORES_MAX or bounded by usize; both fit i64 on
        // every target Linux runs on, and saturation only affects the text.
        ranges_text(
            self.cores
                .iter()
                .map(|c| i64::try_from(c.0).unwrap_or(i64::MAX)),
        )
    }
}

/// Reads `Cpus_allowed_list:\t0-3,8` out of a `/proc/*/status` text. `None`
/// when the line is missing or does not parse: callers fall back to a count.
fn allowed_cores_in_status(status: &str) -> Option<BTreeSet<CoreId>> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list.trim())
}

/// Parses the kernel's CPU list format (`0-3,8,10-11`).
fn parse_cpu_list(list: &str) -> Option<BTreeSet<CoreId>> {
    let mut cores = BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let one = part.parse::<usize>().ok()?;
                (one, one)
            }
        };
        // Never expand a garbage range into millions of entries.
        if first > last || last >= CORES_MAX {
            return None;
        }
        cores.extend((first..=last).map(CoreId));
    }
    Some(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_cpu_list() {
        let status = "Name:\tx\nCpus_allowed:\t0f\nCpus_allowed_list:\t0-2,5\nMems_allowed:\t1\n";
        let cores = allowed_cores_in_status(status).expect("parses");
        let machine = Machine { cores };
        assert_eq!(machine.cores_text(), "0-2, 5");
        assert!(machine.has_core(CoreId(5)));
        assert!(!machine.has_core(CoreId(3)));
    }

    #[test]
    fn rejects_garbage_cpu_lists() {
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
        assert_eq!(allowed_cores_in_status("Name:\tx\n"), None);
    }

    #[test]
    fn detect_finds_at_least_one_core() {
        let machine = Machine::detect();
        assert!(machine.core_count() >= 1);
    }

    #[test]
    fn fake_machines_number_from_zero() {
        let machine = Machine::with_cores(2);
        assert_eq!(machine.cores_text(), "0-1");
        assert_eq!(Machine::with_cores(8).cores_text(), "0-7");
        assert_eq!(Machine::with_cores(0).cores_text(), "no cores");
    }
}
