//! The event sources against real servers on loopback, started by
//! ./scripts/test.sh: kinesis-mock (Kinesis) and tansu (Kafka), and the
//! embedded log; state and leases in the embedded store.
//!
//! - `suite`: what every source must do, written once and run on all three
//!   (good and bad records exactly once across a restart, fencing of a
//!   member whose lease is taken, take-over from a member that dies,
//!   balancing where the source has a group).
//! - `kafka_only`: the group's committed offset is only a hint.
//! - `kinesis_only`: what only Kinesis has (KPL aggregates and sub-sequence
//!   checkpoints, resharding, throttling and expired iterators, the shard
//!   reader's fencing).

mod harness;
mod kafka_only;
mod kinesis_only;
mod suite;

/// Runs the named suite tests on one source, as `<source>::<test>`.
macro_rules! on_source {
    ($source:ident => $kind:ident [$($test:ident),+ $(,)?]) => {
        mod $source {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::suite::$test(crate::harness::Kind::$kind).await;
                }
            )+
        }
    };
}

/// The suite: `every` test on every source, `grouped` on the sources whose
/// members form a group (the embedded log has one process, no balancing).
macro_rules! suite {
    (every [$($t:ident),+ $(,)?] grouped [$($g:ident),+ $(,)?]) => {
        on_source!(log => Log [$($t),+]);
        on_source!(kinesis => Kinesis [$($t),+, $($g),+]);
        on_source!(kafka => Kafka [$($t),+, $($g),+]);
    };
}

suite!(
    every [
        good_and_bad_records_apply_once_across_a_restart,
        a_member_whose_lease_is_taken_is_fenced,
        a_member_that_dies_is_taken_over,
        a_failing_partition_holds_only_itself,
        poison_records_are_dead_lettered_and_the_partition_moves_on,
        every_event_sent_twice_applies_once,
    ]
    grouped [two_members_split_the_partitions]
);
