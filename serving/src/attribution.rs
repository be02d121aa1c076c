//! Counting what was shown, per model version and source, for
//! `GET /api/analytics/recommendations`: responses hand their counts to a
//! bounded queue and return at once; one writer task adds up whatever has
//! queued and writes each counter once per round. A full queue drops the
//! count (counted in `shopstream_recommendation_impressions_dropped_total`):
//! a lost impression costs less than a slow answer. On stop, the writer
//! drains the queue before it ends.

use std::{collections::BTreeMap, sync::Arc};

use processors::state::reco_key;
use storage::{Store, Table, Update};
use tokio::sync::{mpsc, watch};

/// What one response showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// The model version, or `popularity` without a model.
    pub version: String,
    /// Items shown, per source name.
    pub per_source: BTreeMap<&'static str, i64>,
}

/// Hands counts to the writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Impressions {
    tx: mpsc::Sender<Shown>,
}

impl Impressions {
    /// Queues one response's counts, or drops them when the queue is full.
    pub fn count(&self, shown: Shown) {
        if self.tx.try_send(shown).is_err() {
            metrics::counter!("shopstream_recommendation_impressions_dropped_total").increment(1);
        }
    }
}

/// The task that writes the counts.
#[derive(Debug)]
pub struct Writer {
    store: Arc<dyn Store>,
    rx: mpsc::Receiver<Shown>,
}

/// A queue of `capacity` responses and its writer.
pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (Impressions, Writer) {
    let (tx, rx) = mpsc::channel(capacity);
    (Impressions { tx }, Writer { store, rx })
}

/// The counters one round writes: `(version, source or None)` →
/// (responses, impressions).
type Totals = BTreeMap<(String, Option<&'static str>), (i64, i64)>;

impl Writer {
    /// Writes counts as they come until `stopped` turns true, then drains
    /// what is queued and ends.
    pub async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            let first = tokio::select! {
                shown = self.rx.recv() => shown,
                _ = stopped.wait_for(|stop| *stop) => None,
            };
            let Some(first) = first else { break };
            let mut totals = Totals::new();
            add(&mut totals, first);
            while let Ok(more) = self.rx.try_recv() {
                add(&mut totals, more);
            }
            self.write(totals).await;
        }
        self.rx.close();
        let mut totals = Totals::new();
        while let Ok(more) = self.rx.try_recv() {
            add(&mut totals, more);
        }
        self.write(totals).await;
    }

    async fn write(&self, totals: Totals) {
        for ((version, source), (responses, impressions)) in totals {
            let mut updates = vec![Update::add("impressions", impressions)];
            if source.is_none() {
                updates.push(Update::add("responses", responses));
            }
            let key = reco_key(&version, source);
            if let Err(e) = self
                .store
                .update(Table::Analytics, &key, updates, None)
                .await
            {
                tracing::debug!(error = %e, "impression count lost");
            }
        }
    }
}

fn add(totals: &mut Totals, shown: Shown) {
    let all: i64 = shown.per_source.values().sum();
    let total = totals.entry((shown.version.clone(), None)).or_default();
    total.0 += 1;
    total.1 += all;
    for (source, n) in shown.per_source {
        totals
            .entry((shown.version.clone(), Some(source)))
            .or_default()
            .1 += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_adds_responses_and_impressions_per_source() {
        let mut totals = Totals::new();
        for n in [2, 3] {
            add(
                &mut totals,
                Shown {
                    version: "m1".into(),
                    per_source: BTreeMap::from([("sequence", n), ("popularity", 1)]),
                },
            );
        }
        assert_eq!(totals[&("m1".to_owned(), None)], (2, 7));
        assert_eq!(totals[&("m1".to_owned(), Some("sequence"))], (0, 5));
        assert_eq!(totals[&("m1".to_owned(), Some("popularity"))], (0, 2));
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        let (tx, mut rx) = mpsc::channel(1);
        let impressions = Impressions { tx };
        let shown = Shown {
            version: "m1".into(),
            per_source: BTreeMap::new(),
        };
        impressions.count(shown.clone());
        impressions.count(shown.clone());
        assert_eq!(rx.try_recv().unwrap(), shown);
        assert!(rx.try_recv().is_err(), "the second was dropped");
    }
}
