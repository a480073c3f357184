//! Every core map shipped in `tuning/` loads, validates on a machine it is
//! meant for, and says what its comments say it does.
//!
//! Owns: the contract between the shipped example files and the crate.
//! Must never: depend on the machine running the tests; machines are faked.

use std::path::PathBuf;

use tuning::{
    ClientThreads, CoreId, Guarantee, IdleStrategy, Machine, NodeTuning, OwnershipMode,
    PartitionId, RetryPolicy, WarningKind,
};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn load(name: &str) -> NodeTuning {
    NodeTuning::load(example(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn partitions(range: std::ops::Range<i32>) -> Vec<PartitionId> {
    range.map(PartitionId).collect()
}

#[test]
fn every_toml_file_in_the_folder_is_a_valid_core_map() {
    let mut names: Vec<String> = std::fs::read_dir(env!("CARGO_MANIFEST_DIR"))
        .expect("crate folder readable")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml") && name != "Cargo.toml")
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "consumer-group.toml",
            "dedicated-8-core.toml",
            "one-core.toml",
            "two-cores.toml"
        ],
        "a new example needs a test here and a line in README.md"
    );
    for name in &names {
        let tuning = load(name);
        tuning
            .validate_against(&Machine::with_cores(8))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tuning.path(), Some(example(name).as_path()));
        // Written back and read again, each file describes the same map.
        let again = NodeTuning::from_toml_str(&tuning.to_toml_string())
            .unwrap_or_else(|e| panic!("{name} written back: {e}"));
        assert_eq!(again, tuning, "{name}");
    }
}

#[test]
fn one_core_owns_all_four_partitions_and_parks() {
    let tuning = load("one-core.toml");
    let machine = Machine::with_cores(1);
    tuning.validate_against(&machine).expect("fits one core");
    assert_eq!(tuning.ownership().mode, OwnershipMode::CoreMap);
    assert_eq!(tuning.ownership().partitions, 4);
    assert_eq!(tuning.shards().len(), 1);
    assert_eq!(tuning.partitions_of(CoreId(0)), partitions(0..4).as_slice());
    assert!(matches!(tuning.runtime().idle, IdleStrategy::Park { .. }));
    assert!(tuning.unowned_partitions().is_empty());
    assert!(tuning.warnings(&machine).is_empty());
    assert!(tuning
        .check_partition_count("order-service.order.created", 4)
        .is_ok());
}

#[test]
fn two_cores_split_eight_partitions() {
    let tuning = load("two-cores.toml");
    let machine = Machine::with_cores(2);
    tuning.validate_against(&machine).expect("fits two cores");
    assert_eq!(tuning.ownership().partitions, 8);
    assert_eq!(
        tuning.partitions_of(CoreId(0)),
        &[0, 2, 4, 6].map(PartitionId)
    );
    assert_eq!(
        tuning.partitions_of(CoreId(1)),
        &[1, 3, 5, 7].map(PartitionId)
    );
    for p in 0..8 {
        assert_eq!(
            tuning.owner_of(PartitionId(p)),
            Some(CoreId(usize::try_from(p % 2).expect("small"))),
            "partition {p}"
        );
    }
    assert!(tuning.warnings(&machine).is_empty());
    assert_eq!(tuning.node().name.instance_id(CoreId(1)), "node-a-1");
    // It does not fit a single core, and the error says which key and why.
    let error = tuning
        .validate_against(&Machine::with_cores(1))
        .expect_err("core 1 is missing");
    let text = error.to_string();
    assert!(text.contains("two-cores.toml:"), "{text}");
    assert!(
        text.contains("shard[1].core: core 1 does not exist; this machine has cores 0"),
        "{text}"
    );
}

#[test]
fn dedicated_8_core_busy_polls_on_2_to_7_with_clients_on_0_and_1() {
    let tuning = load("dedicated-8-core.toml");
    let machine = Machine::with_cores(8);
    tuning.validate_against(&machine).expect("fits eight cores");
    assert_eq!(tuning.ownership().partitions, 24);
    assert_eq!(
        tuning.shard_cores().collect::<Vec<_>>(),
        (2..8).map(CoreId).collect::<Vec<_>>()
    );
    assert_eq!(tuning.runtime().idle, IdleStrategy::BusyPoll);
    assert_eq!(
        tuning.runtime().client_threads,
        ClientThreads::Cores(vec![CoreId(0), CoreId(1)])
    );
    for shard in tuning.shards() {
        assert_eq!(shard.partitions.len(), 4, "core {}", shard.core);
    }
    assert!(tuning.unowned_partitions().is_empty());
    assert!(tuning.warnings(&machine).is_empty());
    // Its [retry] section spells out the defaults, as its comments say.
    let text = std::fs::read_to_string(example("dedicated-8-core.toml")).expect("readable");
    assert!(
        text.contains("\n[retry]\n"),
        "the example shows the section"
    );
    assert_eq!(tuning.retry(), RetryPolicy::default());
    assert!(tuning.validate_against(&Machine::with_cores(4)).is_err());
    // Topics created with the wrong count are caught with the fix spelled out.
    let error = tuning
        .check_partition_count("payment-service.payment.completed", 12)
        .expect_err("12 != 24");
    assert!(error.to_string().contains("ownership.partitions"));
}

#[test]
fn consumer_group_lists_shards_without_partitions() {
    let tuning = load("consumer-group.toml");
    let machine = Machine::with_cores(2);
    tuning.validate_against(&machine).expect("fits two cores");
    assert_eq!(tuning.ownership().mode, OwnershipMode::ConsumerGroup);
    assert_eq!(tuning.shards().len(), 2);
    assert!(tuning.shards().iter().all(|s| s.partitions.is_empty()));
    assert_eq!(tuning.owner_of(PartitionId(0)), None);
    assert!(tuning.unowned_partitions().is_empty());
    assert_eq!(tuning.commit().guarantee, Guarantee::AtLeastOnce);
    assert!(tuning
        .check_partition_count("inventory-service.stock.updated", 8)
        .is_ok());
}

#[test]
fn a_map_with_partitions_left_to_another_node_warns() {
    let text = std::fs::read_to_string(example("two-cores.toml"))
        .expect("example readable")
        .replace("partitions = 8", "partitions = 16");
    let tuning = NodeTuning::from_toml_str(&text).expect("unowned partitions are allowed");
    assert_eq!(tuning.unowned_partitions(), partitions(8..16));
    let warnings = tuning.warnings(&Machine::with_cores(2));
    assert!(warnings.iter().any(|w| matches!(
        &w.kind,
        WarningKind::UnownedPartitions { partitions: p } if *p == partitions(8..16)
    )));
}
