//! The reader and the publisher against librdkafka's in-process mock
//! cluster (unit tests only: the integration tests that use them run
//! against the real loopback Kafka, through `engine::kafka` and loadgen).
//!
//! Owns: nothing outside these tests. Must never: stand in for Kafka in an
//! integration test.

use rdkafka::mocking::MockCluster;

use crate::{
    publish_and_wait, MissingTopics, PartitionRange, Publish, Reader, ReaderSettings, TimeBounds,
};

fn cluster_with(
    topic: &str,
    partitions: i32,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("a mock cluster");
    cluster
        .create_topic(topic, partitions, 1)
        .expect("a topic on the mock cluster");
    cluster
}

fn reader(bootstrap: &str) -> Reader {
    Reader::new(bootstrap, &[], ReaderSettings::new("records-unit-tests")).expect("a reader")
}

#[test]
fn what_is_published_is_read_to_the_end_with_its_keys_and_headers() {
    let cluster = cluster_with("orders", 3);
    let bootstrap = cluster.bootstrap_servers();
    let keys: Vec<Vec<u8>> = (0..12u8).map(|i| vec![b'k', i]).collect();
    let payloads: Vec<Vec<u8>> = (0..12u8).map(|i| vec![b'v', i, i]).collect();
    let headers = [("source", b"unit".as_slice())];
    let records: Vec<Publish<'_>> = keys
        .iter()
        .zip(&payloads)
        .map(|(key, payload)| Publish {
            topic: "orders",
            partition: None,
            key: Some(key),
            payload: Some(payload),
            headers: &headers,
        })
        .collect();
    assert_eq!(
        publish_and_wait(&bootstrap, &[], &records).expect("published"),
        12
    );

    let mut read = Vec::new();
    let count = reader(&bootstrap)
        .read_to_end(&["orders"], &mut |record| {
            assert_eq!(record.topic(), "orders");
            assert_eq!(
                record.headers().collect::<Vec<_>>(),
                vec![("source", b"unit".as_slice())]
            );
            read.push((
                record.key().map(<[u8]>::to_vec),
                record.payload().map(<[u8]>::to_vec),
            ));
        })
        .expect("read to the end");
    assert_eq!(count, 12);
    read.sort();
    let mut expected: Vec<_> = keys
        .into_iter()
        .zip(payloads)
        .map(|(k, v)| (Some(k), Some(v)))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
}

#[test]
fn a_range_read_hands_out_its_slice_and_nothing_past_its_end() {
    let cluster = cluster_with("slices", 2);
    let bootstrap = cluster.bootstrap_servers();
    let payloads: Vec<[u8; 1]> = (0..10u8).map(|i| [i]).collect();
    let records: Vec<Publish<'_>> = payloads
        .iter()
        .map(|payload| Publish {
            topic: "slices",
            partition: Some(1),
            key: None,
            payload: Some(payload),
            headers: &[],
        })
        .collect();
    publish_and_wait(&bootstrap, &[], &records).expect("published");

    let reader = reader(&bootstrap);
    let whole = reader
        .ranges(&["slices"], TimeBounds::default(), MissingTopics::Fail)
        .expect("ranges");
    // Partition 0 is empty: left out.
    assert_eq!(
        whole,
        vec![PartitionRange {
            topic: "slices".into(),
            partition: 1,
            start: 0,
            end: 10
        }]
    );
    let slice = [PartitionRange {
        start: 3,
        end: 7,
        ..whole[0].clone()
    }];
    let mut offsets = Vec::new();
    let visited = reader
        .read_ranges(&slice, &mut |record| {
            assert_eq!(record.payload(), Some([record.offset() as u8].as_slice()));
            offsets.push(record.offset());
        })
        .expect("a range read");
    assert_eq!(visited, 4);
    assert_eq!(offsets, vec![3, 4, 5, 6]);
}

#[test]
fn a_topic_skipped_when_missing_has_nothing_to_read() {
    let cluster = cluster_with("present", 1);
    let bootstrap = cluster.bootstrap_servers();
    let read = reader(&bootstrap)
        .read_to_end(&["present", "absent"], &mut |_| {
            panic!("nothing was written")
        })
        .expect("an empty read");
    assert_eq!(read, 0);
}
