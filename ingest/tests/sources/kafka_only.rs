//! What only Kafka has: the group's committed offsets, which are only a hint.

use std::{collections::HashMap, time::Duration};

use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
};

use crate::harness::{Fixture, Kind, adjustments, products};

/// On assignment a member starts from the checkpoint in our store, not from
/// the group's committed offset: an offset committed ahead of what was
/// applied (by a tool, or a member of an older version) skips nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_starts_from_the_store_not_from_the_committed_offset() {
    let f = Fixture::new(Kind::Kafka, 1).await;
    let ps = products(4);
    let mut want = HashMap::new();
    f.sink()
        .publish_raw(&adjustments(&ps, 100, &mut want))
        .await
        .unwrap();
    // Someone commits offset 80 for the group before any member ran.
    let s = f.kafka_settings().clone();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &s.brokers)
            .set("group.id", &s.group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&s.topic, 0, Offset::Offset(80))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    let a = f.start("member-a", Duration::from_secs(10));
    f.wait_totals(&want).await;
    f.settle(&mut want).await;
    a.stop().await;
}
