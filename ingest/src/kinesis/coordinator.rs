//! The lease coordinator: keeps one lease per shard (with its parents),
//! takes its fair share of the shards that may be read now, steals one a
//! round from the most loaded worker, and runs a reader per held shard.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use aws_sdk_kinesis::Client;
use processors::Pipeline;
use tokio::{sync::watch, task::JoinSet};

use super::KinesisSettings;
use super::{KinesisError, ShardReader, list_shards};
use crate::{Lease, Leases};

/// How often the coordinator looks for leases to take, at most.
const LEASE_SCAN: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads a stream's shards through the pipeline, sharing them with the other
/// instances that use the same lease table.
#[derive(Clone, Debug)]
pub struct KinesisConsumer {
    pub client: Client,
    pub stream: String,
    pub leases: Leases,
    pub pipeline: Pipeline,
    pub settings: KinesisSettings,
}

impl KinesisConsumer {
    /// Runs until `shutdown` turns true; then the readers release their
    /// leases. Dropping (aborting) this future stops the readers at once,
    /// without releasing — as a crash would.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut readers: JoinSet<()> = JoinSet::new();
        let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        let mut synced: Option<Instant> = None;
        // Leases are looked at every second (one query of the lease
        // table): a lease another instance released at its shutdown is taken
        // within about a second, not after the failover time.
        let tick = (self.leases.failover() / 3)
            .min(self.settings.shard_sync)
            .min(LEASE_SCAN);
        // Lease scans done, numbered from 1: `shopstream_lease_scans_total`,
        // and the number of the last one that took a lease
        // (`shopstream_lease_taken_scan`), so a handover can be measured
        // in scans as well as in seconds.
        let mut scans: u64 = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            while let Some(done) = readers.try_join_next() {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a shard reader panicked");
                }
            }
            running.retain(|_, h| !h.is_finished());
            if synced.is_none_or(|t| t.elapsed() >= self.settings.shard_sync) {
                match self.sync_shards().await {
                    Ok(()) => synced = Some(Instant::now()),
                    Err(e) => {
                        tracing::warn!(stream = %self.stream, error = %e, "cannot list shards")
                    }
                }
            }
            scans += 1;
            match self.plan(&running).await {
                Ok(take) => {
                    for (shard, seen) in take {
                        match self.leases.take(&self.stream, &shard, &seen).await {
                            Ok(Some(held)) => {
                                tracing::info!(stream = %self.stream, shard, counter = held.lease.counter, scan = scans, "took lease");
                                metrics::gauge!("shopstream_lease_taken_scan", "stream" => self.stream.clone())
                                    .set(scans as f64);
                                let reader = ShardReader::new(self.clone(), held);
                                let handle = readers.spawn(reader.run(shutdown.clone()));
                                running.insert(shard, handle);
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(shard, error = %e, "cannot take lease"),
                        }
                    }
                }
                Err(e) => tracing::warn!(stream = %self.stream, error = %e, "cannot read leases"),
            }
            metrics::gauge!("shopstream_leases_held", "stream" => self.stream.clone())
                .set(running.len() as f64);
            metrics::counter!("shopstream_lease_scans_total", "stream" => self.stream.clone())
                .increment(1);
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {}
            }
        }
        while readers.join_next().await.is_some() {}
        metrics::gauge!("shopstream_leases_held", "stream" => self.stream.clone()).set(0.0);
    }

    /// Makes sure every shard has a lease, with its parents.
    async fn sync_shards(&self) -> Result<(), KinesisError> {
        let shards = list_shards(&self.client, &self.stream).await?;
        // A leased shard the stream no longer lists is past retention:
        // nothing is left to read, so it is finished and its children start.
        let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id()).collect();
        if !shards.is_empty() {
            for (shard, lease) in self.leases.list(&self.stream).await? {
                if !lease.finished && !listed.contains(shard.as_str()) {
                    tracing::warn!(stream = %self.stream, shard, "the shard is gone from the stream; counting it as finished");
                    self.leases.finish_gone(&self.stream, &shard).await?;
                }
            }
        }
        for shard in shards.iter() {
            let parents: Vec<String> = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            self.leases
                .ensure(&self.stream, shard.shard_id(), parents)
                .await?;
        }
        Ok(())
    }

    /// Which leases to take this round: free ones up to this worker's share
    /// of the readable shards, else one stolen from the busiest worker.
    async fn plan(
        &self,
        running: &HashMap<String, tokio::task::AbortHandle>,
    ) -> Result<Vec<(String, Lease)>, storage::StoreError> {
        let leases = self.leases.list(&self.stream).await?;
        let lapsed: HashSet<String> = leases
            .iter()
            .filter(|(s, l)| self.leases.lapsed(&self.stream, s, l))
            .map(|(s, _)| s.clone())
            .collect();
        Ok(plan(self.leases.owner(), &leases, running, |s, _| {
            lapsed.contains(s)
        }))
    }
}

/// The balancing decision, kept pure for testing. `running`: the shards this
/// worker reads now; `free`: whether a shard's lease may be taken (nobody
/// holds it, or its holder stopped renewing it).
fn plan<V>(
    me: &str,
    leases: &[(String, Lease)],
    running: &HashMap<String, V>,
    free: impl Fn(&str, &Lease) -> bool,
) -> Vec<(String, Lease)> {
    let known: HashSet<&str> = leases.iter().map(|(s, _)| s.as_str()).collect();
    let finished: HashSet<&str> = leases
        .iter()
        .filter(|(_, l)| l.finished)
        .map(|(s, _)| s.as_str())
        .collect();
    // Readable: not finished, and every parent finished (or gone from the
    // stream and never leased: trimmed long ago).
    let readable: Vec<&(String, Lease)> = leases
        .iter()
        .filter(|(_, l)| {
            !l.finished
                && l.parents
                    .iter()
                    .all(|p| finished.contains(p.as_str()) || !known.contains(p.as_str()))
        })
        .collect();
    if readable.is_empty() {
        return Vec::new();
    }
    let mut load: HashMap<&str, usize> = HashMap::new();
    for (shard, l) in &readable {
        if let Some(owner) = l.owner.as_deref()
            && owner != me
            && !free(shard, l)
            && !running.contains_key(shard)
        {
            *load.entry(owner).or_default() += 1;
        }
    }
    let workers = load.len() + 1;
    let target = readable.len().div_ceil(workers);
    let mine = readable
        .iter()
        .filter(|(s, _)| running.contains_key(s))
        .count();
    if mine >= target {
        return Vec::new();
    }
    let mut need = target - mine;
    let mut take: Vec<(String, Lease)> = Vec::new();
    for (shard, l) in &readable {
        if need == 0 {
            break;
        }
        let stale_mine = l.owner.as_deref() == Some(me);
        if !running.contains_key(shard) && (free(shard, l) || stale_mine) {
            take.push((shard.clone(), l.clone()));
            need -= 1;
        }
    }
    if take.is_empty()
        && let Some((&busiest, &n)) = load
            .iter()
            .max_by_key(|(o, n)| (**n, std::cmp::Reverse(**o)))
        && n > target
        && let Some((shard, l)) = readable.iter().find(|(s, l)| {
            l.owner.as_deref() == Some(busiest) && !free(s, l) && !running.contains_key(s)
        })
    {
        take.push((shard.clone(), l.clone()));
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: Option<&str>, expires_at: i64, parents: &[&str], finished: bool) -> Lease {
        Lease {
            owner: owner.map(str::to_owned),
            counter: 1,
            expires_at,
            checkpoint: None,
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            finished,
        }
    }

    /// Free: held by nobody, or past `expires_at` at `now` (these tests
    /// are about balancing, not about telling lapsed leases).
    fn by_clock(now: i64) -> impl Fn(&str, &Lease) -> bool {
        move |_, l| l.owner.is_none() || l.expires_at < now
    }

    fn shards(list: &[(&str, Lease)]) -> Vec<(String, Lease)> {
        list.iter()
            .map(|(s, l)| ((*s).to_owned(), l.clone()))
            .collect()
    }

    #[test]
    fn a_lone_worker_takes_every_readable_shard() {
        let leases = shards(&[
            ("0", lease(None, 0, &[], false)),
            ("1", lease(Some("dead"), 5, &[], false)),
            ("2", lease(None, 0, &["0"], false)),
            ("3", lease(None, 0, &[], true)),
        ]);
        let take = plan::<()>("me", &leases, &HashMap::new(), by_clock(100));
        let names: Vec<&str> = take.iter().map(|(s, _)| s.as_str()).collect();
        // "2" waits for its parent; "3" is finished.
        assert_eq!(names, vec!["0", "1"]);
    }

    #[test]
    fn children_become_readable_when_all_parents_are_finished() {
        let leases = shards(&[
            ("a", lease(None, 0, &[], true)),
            ("b", lease(Some("x"), 1000, &[], false)),
            ("c", lease(None, 0, &["a", "b"], false)),
            ("d", lease(None, 0, &["a", "gone"], false)),
        ]);
        let take = plan::<()>("me", &leases, &HashMap::new(), by_clock(100));
        let names: Vec<&str> = take.iter().map(|(s, _)| s.as_str()).collect();
        // "c" still waits for "b"; "d"'s other parent is no longer in the stream.
        assert_eq!(names, vec!["d"]);
    }

    #[test]
    fn a_new_worker_steals_one_lease_a_round_until_balanced() {
        let live = 10_000;
        let mut leases = shards(&[
            ("0", lease(Some("a"), live, &[], false)),
            ("1", lease(Some("a"), live, &[], false)),
            ("2", lease(Some("a"), live, &[], false)),
            ("3", lease(Some("a"), live, &[], false)),
        ]);
        let mut running: HashMap<String, ()> = HashMap::new();
        for _ in 0..5 {
            for (shard, _) in plan("b", &leases, &running, by_clock(100)) {
                running.insert(shard.clone(), ());
                let l = leases.iter_mut().find(|(s, _)| *s == shard).unwrap();
                l.1.owner = Some("b".into());
            }
        }
        assert_eq!(running.len(), 2);
        // And "a", now holding its share, takes nothing back.
        let a_running: HashMap<String, ()> = leases
            .iter()
            .filter(|(_, l)| l.owner.as_deref() == Some("a"))
            .map(|(s, _)| (s.clone(), ()))
            .collect();
        assert!(plan("a", &leases, &a_running, by_clock(100)).is_empty());
    }
}
