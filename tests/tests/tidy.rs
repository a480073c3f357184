//! Tidy checks over the source tree, run as tests so CI enforces them:
//! - no `Mutex` or `RwLock` in the crates on the data path (engine, codecs):
//!   shards exchange data only through Kafka, bounded lock-free channels and
//!   atomics, so a lock there is a design error, not a style issue;
//! - every module starts with a `//!` doc saying what it owns and must never do.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Code lines of a file: comments and string-free doc lines dropped.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.starts_with("//"))
}

#[test]
fn no_locks_on_the_data_path() {
    let mut offenders = Vec::new();
    for krate in ["engine/src", "codecs/src"] {
        let mut files = Vec::new();
        rust_files(&repo_root().join(krate), &mut files);
        assert!(!files.is_empty(), "{krate} has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (line, code) in code_lines(&text) {
                let code = code.split("//").next().unwrap_or_default();
                for lock in ["Mutex", "RwLock", "parking_lot", "Condvar"] {
                    if code
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .any(|word| word == lock)
                    {
                        offenders.push(format!("{}:{line}: {code}", file.display()));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "locks on the data path (use Kafka, crossbeam channels or atomics):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn every_module_says_what_it_owns() {
    let mut missing = Vec::new();
    for krate in [
        "engine/src",
        "codecs/src",
        "services/src",
        "loadgen/src",
        "tuning/src",
        "tests/src",
        "registry/src",
    ] {
        let mut files = Vec::new();
        rust_files(&repo_root().join(krate), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            if !first.is_some_and(|l| l.starts_with("//!")) {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a //! doc:\n{}",
        missing.join("\n")
    );
}
