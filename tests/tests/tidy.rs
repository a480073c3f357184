//! Tidy checks over the source tree, run as tests so CI enforces them:
//! - no `Mutex` or `RwLock` in the crates on the data path (engine, codecs):
//!   shards exchange data only through Kafka, bounded lock-free channels and
//!   atomics, so a lock there is a design error, not a style issue;
//! - every module starts with a `//!` doc saying what it owns and must never do;
//! - the crate graph (`cargo metadata`, rust-analyzer style): which workspace
//!   crate may depend on which, which crates see rdkafka (the Kafka adapters)
//!   and glommio (the engine's runtime), and that the engine's binary links
//!   no load-generator reporting (no member it reaches declares plotters or
//!   indicatif), its demo included;
//! - a dependency two members share is declared once, in the root's
//!   `[workspace.dependencies]`, and inherited (`x.workspace = true`);
//! - one watermark loop and one call timeout: only the `records` crate asks
//!   a broker for watermarks in production code (`records::watermarks`, its
//!   retry loop), and `KAFKA_CALL_TIMEOUT_MS` is defined once, there;
//! - one type per setting: the core map's setting types (and the one
//!   `Guarantee`, the one `ValueFormat`) are defined in the tuning crate only, and every producer
//!   that sets `transaction.timeout.ms` sets tuning's `TRANSACTION_TIMEOUT_MS`,
//!   the constant the exactly-once commit interval limit is derived from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

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
        "audit/src",
        "hdr/src",
        "records/src",
        "traffic/src",
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

/// The types of the core map's settings, each defined once, in the tuning
/// crate (`tuning/src/model.rs`, `[wire]`'s in `tuning/src/wire.rs`); the
/// engine, the binaries, the audit, the load generator and the tests take
/// these (issue #20).
const SETTING_TYPES: &[&str] = &[
    "enum Guarantee",
    "enum ProcessingGuarantee",
    "enum DeliveryGuarantee",
    "enum GuaranteeArg",
    "enum IdleStrategy",
    "enum ClientThreads",
    "enum CommitTiming",
    "enum ChangelogLayout",
    "struct CommitPolicy",
    "struct RetryPolicy",
    "struct RuntimeKnobs",
    "struct NodeKnobs",
    "struct StateSection",
    "enum ValueFormat",
    "enum ValueFormatName",
    "enum ValueFormatArg",
];

#[test]
fn each_setting_has_one_type_and_the_transaction_timeout_one_value() {
    let mut offences = Vec::new();
    let mut files = Vec::new();
    for krate in [
        "engine", "codecs", "services", "loadgen", "tuning", "tests", "registry", "audit", "hdr",
        "records", "traffic", "benches",
    ] {
        rust_files(&repo_root().join(krate), &mut files);
    }
    assert!(!files.is_empty(), "no sources found");
    let mut timeout_definitions = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let relative = file
            .strip_prefix(repo_root())
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, code) in code_lines(&text) {
            for setting in SETTING_TYPES {
                let defines = code.split_once(setting).is_some_and(|(before, after)| {
                    before
                        .split_whitespace()
                        .all(|w| w == "pub" || w.starts_with("pub("))
                        && !after.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if defines && !relative.starts_with("tuning/src/") {
                    offences.push(format!(
                        "{relative}:{line}: `{setting}` defined outside the tuning crate: take tuning's type"
                    ));
                }
            }
            if code
                .trim_start_matches("pub ")
                .starts_with("const TRANSACTION_TIMEOUT_MS")
            {
                timeout_definitions.push(format!("{relative}:{line}"));
            }
            // Production code only: a test may open a transaction with a
            // timeout of its own (tests/tests/fencing.rs).
            let production = relative.contains("/src/") && !relative.starts_with("tests/");
            if production
                && code.contains("\"transaction.timeout.ms\"")
                && !code.contains("TRANSACTION_TIMEOUT_MS")
            {
                offences.push(format!(
                    "{relative}:{line}: transaction.timeout.ms set to something other than TRANSACTION_TIMEOUT_MS"
                ));
            }
        }
    }
    if timeout_definitions.len() != 1
        || !timeout_definitions[0].starts_with("tuning/src/limits.rs:")
    {
        offences.push(format!(
            "TRANSACTION_TIMEOUT_MS must be defined once, in tuning/src/limits.rs (the exactly-once \
             commit interval limit is derived from it); found at {timeout_definitions:?}"
        ));
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// The workspace crates each workspace crate may depend on (normal
/// dependencies; dev-dependencies are the tests' business). Every member is
/// listed, so a new crate has to take its place here (and in
/// docs/ARCHITECTURE.md's folder map).
const MAY_DEPEND_ON: &[(&str, &[&str])] = &[
    // The wire contract: bytes in, events out; nothing of ours below it.
    ("tradeflow-codecs", &[]),
    // Core maps and knobs: plain data and their validation.
    ("tradeflow-tuning", &[]),
    // Histograms to .hgrm text: knows no flow.
    ("tradeflow-hdr", &[]),
    // The invariant audit: events in, report out (under tuning's `Guarantee`).
    ("tradeflow-audit", &["tradeflow-codecs", "tradeflow-tuning"]),
    // Reading topics outside any group and publishing with acknowledgements
    // awaited: the one reader and publisher, below every Kafka client of ours.
    ("tradeflow-records", &[]),
    (
        "tradeflow-registry",
        &["tradeflow-codecs", "tradeflow-records"],
    ),
    (
        "tradeflow-engine",
        &["tradeflow-codecs", "tradeflow-records", "tradeflow-tuning"],
    ),
    // Order traffic (scenarios, traffic files, the open-loop driver): drives
    // a flow from outside, as a client would, so no engine and no stage.
    (
        "tradeflow-traffic",
        &[
            "tradeflow-audit",
            "tradeflow-codecs",
            "tradeflow-records",
            "tradeflow-registry",
        ],
    ),
    // The load generator knows no stage and no engine type.
    (
        "tradeflow-loadgen",
        &[
            "tradeflow-audit",
            "tradeflow-codecs",
            "tradeflow-hdr",
            "tradeflow-records",
            "tradeflow-registry",
            "tradeflow-traffic",
            "tradeflow-tuning",
        ],
    ),
    // The stages and the `tradeflow` binary. Never the load generator; the
    // traffic crate only for `tradeflow demo` (OPTIONAL_ONLY).
    (
        "tradeflow-services",
        &[
            "tradeflow-audit",
            "tradeflow-codecs",
            "tradeflow-engine",
            "tradeflow-hdr",
            "tradeflow-registry",
            "tradeflow-tuning",
        ],
    ),
    // The integration tests' harness (its engines' knobs are validated by
    // tuning, like a core map's).
    (
        "tradeflow-tests",
        &[
            "tradeflow-codecs",
            "tradeflow-engine",
            "tradeflow-records",
            "tradeflow-tuning",
        ],
    ),
    // Criterion benchmarks: dev-dependencies only.
    ("tradeflow-benches", &[]),
];

/// Normal dependencies allowed only as optional ones, behind the named
/// feature: `tradeflow demo` drives the flow with a synthetic scenario and
/// the open-loop driver (the traffic crate), and a build without the
/// feature (the production image) links none of it (rand, the driver).
const OPTIONAL_ONLY: &[(&str, &str, &str)] = &[("tradeflow-services", "tradeflow-traffic", "demo")];

/// The Kafka adapters: the crates that may use rdkafka directly (any kind of
/// dependency), each with what it talks to Kafka for. Everything else reaches
/// Kafka through one of them.
const SEES_RDKAFKA: &[(&str, &str)] = &[
    (
        "tradeflow-engine",
        "the shard port, topic administration, the owners' registry, standbys",
    ),
    (
        "tradeflow-services",
        "the Order API's producer (`api::kafka`), `tradeflow demo`'s mock cluster",
    ),
    (
        "tradeflow-loadgen",
        "`ping` (its own topic, producer and consumer)",
    ),
    (
        "tradeflow-traffic",
        "the open-loop driver's producer and outcome reader",
    ),
    ("tradeflow-registry", "the `_schemas` topic"),
    (
        "tradeflow-records",
        "reading topics outside any group, watermarks, publishing with acknowledgements awaited",
    ),
    (
        "tradeflow-tests",
        "the integration harness against the loopback broker",
    ),
    (
        "tradeflow-benches",
        "the restore and commit-path benchmarks (dev)",
    ),
];

/// The crates that may use glommio: the engine's runtime alone.
const SEES_GLOMMIO: &[&str] = &["tradeflow-engine"];

/// One dependency of a workspace member, as `cargo metadata` declares it.
struct Edge {
    from: String,
    to: String,
    /// `normal`, `dev` or `build`.
    kind: String,
    optional: bool,
}

/// Each member's features: feature → what it enables.
type Features = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The workspace's members, their features and their declared dependencies,
/// from `cargo metadata --no-deps` (the manifests as Cargo reads them; no
/// resolution, no network).
fn crate_graph() -> (BTreeSet<String>, Features, Vec<Edge>) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("a package list");
    let mut members = BTreeSet::new();
    let mut features = BTreeMap::new();
    let mut edges = Vec::new();
    for package in packages {
        let name = package["name"].as_str().expect("a package name").to_owned();
        let package_features = package["features"]
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(feature, enables)| {
                        let enables = enables
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|e| e.as_str().map(str::to_owned))
                            .collect();
                        (feature.clone(), enables)
                    })
                    .collect()
            })
            .unwrap_or_default();
        features.insert(name.clone(), package_features);
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            edges.push(Edge {
                from: name.clone(),
                to: dependency["name"]
                    .as_str()
                    .expect("a dependency name")
                    .to_owned(),
                kind: dependency["kind"].as_str().unwrap_or("normal").to_owned(),
                optional: dependency["optional"].as_bool().unwrap_or(false),
            });
        }
        members.insert(name);
    }
    (members, features, edges)
}

#[test]
fn the_crate_graph_keeps_its_shape() {
    let (members, features, edges) = crate_graph();
    let table: BTreeMap<&str, &[&str]> = MAY_DEPEND_ON.iter().copied().collect();
    let mut offences = Vec::new();
    for member in &members {
        if !table.contains_key(member.as_str()) {
            offences.push(format!(
                "{member} is a workspace member missing from MAY_DEPEND_ON: say which crates it may depend on"
            ));
        }
    }
    for crate_name in table.keys() {
        if !members.contains(*crate_name) {
            offences.push(format!(
                "MAY_DEPEND_ON names {crate_name}, which is no workspace member"
            ));
        }
    }
    for edge in &edges {
        let to_member = members.contains(&edge.to);
        if to_member && edge.kind == "normal" {
            let allowed = table
                .get(edge.from.as_str())
                .is_some_and(|a| a.contains(&edge.to.as_str()));
            let optional_rule = OPTIONAL_ONLY
                .iter()
                .find(|(from, to, _)| *from == edge.from && *to == edge.to);
            match optional_rule {
                _ if allowed => {}
                Some((_, _, feature)) => {
                    let enabled_by_feature = features
                        .get(&edge.from)
                        .and_then(|f| f.get(*feature))
                        .is_some_and(|enables| enables.contains(&format!("dep:{}", edge.to)));
                    let gated = edge.optional && enabled_by_feature;
                    if !gated {
                        offences.push(format!(
                            "{} -> {}: allowed only as an optional dependency enabled by the `{feature}` feature (`dep:{}`)",
                            edge.from, edge.to, edge.to
                        ));
                    }
                }
                None => offences.push(format!(
                    "{} -> {} (normal dependency): not in MAY_DEPEND_ON[{}] = {:?}",
                    edge.from,
                    edge.to,
                    edge.from,
                    table.get(edge.from.as_str()).copied().unwrap_or_default()
                )),
            }
        }
        if edge.to == "rdkafka" && !SEES_RDKAFKA.iter().any(|(name, _)| *name == edge.from) {
            offences.push(format!(
                "{} -> rdkafka ({}): only the Kafka adapters ({}) see rdkafka; reach Kafka through one of them",
                edge.from,
                edge.kind,
                SEES_RDKAFKA.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
            ));
        }
        if edge.to == "glommio" && !SEES_GLOMMIO.contains(&edge.from.as_str()) {
            offences.push(format!(
                "{} -> glommio ({}): only the engine's runtime sees glommio",
                edge.from, edge.kind
            ));
        }
    }
    assert!(
        offences.is_empty(),
        "the crate graph broke its rules (tests/tests/tidy.rs, docs/ARCHITECTURE.md):\n{}",
        offences.join("\n")
    );
}

/// The dependency names a manifest declares in `[dependencies]`,
/// `[dev-dependencies]` and `[build-dependencies]` (plain `name = ...` or
/// `name.workspace = true` lines), each with whether it is inherited from
/// the workspace.
fn declared_dependencies(manifest: &str) -> Vec<(String, bool)> {
    let mut declared = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = matches!(
                line,
                "[dependencies]" | "[dev-dependencies]" | "[build-dependencies]"
            );
            continue;
        }
        if !in_dependencies || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let (name, inherited) = match key.strip_suffix(".workspace") {
            Some(name) => (name, true),
            None => (key, value.contains("workspace = true")),
        };
        declared.push((name.to_owned(), inherited));
    }
    declared
}

#[test]
fn shared_dependencies_are_declared_once_for_the_workspace() {
    let root = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("the root manifest");
    let workspace: BTreeSet<String> =
        declared_dependencies(&root.replace("[workspace.dependencies]", "[dependencies]"))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
    assert!(
        !workspace.is_empty(),
        "no [workspace.dependencies] in Cargo.toml"
    );
    let (members, _, edges) = crate_graph();
    let mut users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for edge in &edges {
        users
            .entry(edge.to.as_str())
            .or_default()
            .insert(edge.from.as_str());
    }
    let mut offences = Vec::new();
    for member in &members {
        let folder = member.trim_start_matches("tradeflow-");
        let manifest = std::fs::read_to_string(repo_root().join(folder).join("Cargo.toml"))
            .expect("a member's manifest in the folder its name says");
        for (name, inherited) in declared_dependencies(&manifest) {
            if workspace.contains(&name) && !inherited {
                offences.push(format!(
                    "{folder}/Cargo.toml declares {name} itself: it is in [workspace.dependencies], write `{name}.workspace = true` (features may be added)"
                ));
            }
            let shared_by = users.get(name.as_str()).map_or(0, BTreeSet::len);
            if !workspace.contains(&name) && shared_by > 1 {
                offences.push(format!(
                    "{folder}/Cargo.toml: {name} is used by {shared_by} members ({:?}): declare it once in [workspace.dependencies]",
                    users[name.as_str()]
                ));
            }
        }
    }
    offences.sort();
    offences.dedup();
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// The crates whose sources the one-loop check reads.
const WORKSPACE_CRATES: &[&str] = &[
    "engine", "codecs", "services", "loadgen", "tuning", "tests", "registry", "audit", "hdr",
    "records", "traffic", "benches",
];

#[test]
fn one_watermark_loop_and_one_call_timeout() {
    let mut files = Vec::new();
    for krate in WORKSPACE_CRATES {
        rust_files(&repo_root().join(krate), &mut files);
    }
    assert!(!files.is_empty(), "no sources found");
    let mut offences = Vec::new();
    let mut timeout_definitions = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let relative = file
            .strip_prefix(repo_root())
            .unwrap_or(file)
            .display()
            .to_string();
        // Production code, the test harness included; an integration test
        // may read one partition's watermarks once.
        let production = relative.contains("/src/");
        for (line, code) in code_lines(&text) {
            let code = code.split("//").next().unwrap_or_default();
            if code
                .trim_start_matches("pub ")
                .starts_with("const KAFKA_CALL_TIMEOUT_MS")
            {
                timeout_definitions.push(format!("{relative}:{line}"));
            }
            if production
                && code.contains("fetch_watermarks(")
                && relative != "records/src/watermarks.rs"
            {
                offences.push(format!(
                    "{relative}:{line}: asks for watermarks itself: use `records::watermarks` (the one retry loop)"
                ));
            }
        }
    }
    if timeout_definitions.len() != 1 || !timeout_definitions[0].starts_with("records/src/lib.rs:")
    {
        offences.push(format!(
            "KAFKA_CALL_TIMEOUT_MS must be defined once, in records/src/lib.rs (the engine's \
             transaction timeout is derived from it); found at {timeout_definitions:?}"
        ));
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// Dependencies of the load generator's reporting that the engine's binary
/// must never link, its `demo` included.
const REPORTING_ONLY: &[&str] = &["plotters", "indicatif"];

#[test]
fn the_engine_binary_links_no_load_generator_reporting() {
    let (members, _, edges) = crate_graph();
    // Every member the services reach through normal dependencies, optional
    // ones (features) included: what some build of `tradeflow` links.
    let mut reached = BTreeSet::from(["tradeflow-services".to_string()]);
    let mut frontier = vec!["tradeflow-services".to_string()];
    while let Some(from) = frontier.pop() {
        for edge in edges
            .iter()
            .filter(|e| e.from == from && e.kind == "normal")
        {
            if members.contains(&edge.to) && reached.insert(edge.to.clone()) {
                frontier.push(edge.to.clone());
            }
        }
    }
    let offences: Vec<String> = edges
        .iter()
        .filter(|e| {
            reached.contains(&e.from)
                && e.kind == "normal"
                && REPORTING_ONLY.contains(&e.to.as_str())
        })
        .map(|e| {
            format!(
                "{} -> {}: the `tradeflow` binary reaches {} and would link {}",
                e.from, e.to, e.from, e.to
            )
        })
        .collect();
    assert!(
        !reached.contains("tradeflow-loadgen"),
        "tradeflow-services reaches tradeflow-loadgen through normal dependencies: {reached:?}"
    );
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}
