//! The running service: [`Application::build`] opens the store, bootstraps
//! and binds; [`Application::run`] starts the workers and serves until a
//! stop, then stops everything in reverse order.
//!
//! # Order
//! Workers start in this order, each with a stop of its own, and stop in
//! the reverse one once the HTTP server has finished its requests:
//!
//! 1. `categories`: files every product's category once (stores from before
//!    the category list); ends by itself.
//! 2. `feed` (AWS backend): other instances' changes onto this bus.
//! 3. `consumer`: the stream's shards under leases, through the pipeline.
//!    Stopped after everything that reads the bus or writes the outbox, and
//!    it releases its leases as it stops.
//! 4. `alert sweeper`: low-stock checks a crash interrupted.
//! 5. `outbox relay`: events, notifications and refunds after commerce's
//!    commits.
//! 6. `reservation sweeper`: stock held by payments that never settled.
//! 7. `trainer`: the recommender's model, loaded, trained and retrained.
//! 8. `attribution`: writes the impressions responses counted; drains its
//!    queue as it stops.
//!
//! A worker that ends on its own before the stop (a failed consumer) is
//! logged and stops the whole server with a non-zero exit, so that the
//! orchestrator restarts it rather than leaving an instance that serves
//! without a pipeline.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use api::{AppState, bootstrap};
use ingest::{
    Leases, LogConsumer, StoreLog,
    kafka::KafkaConsumer,
    kinesis::{KinesisConsumer, KinesisSettings},
};
use processors::{Bus, Pipeline};
use storage::Store;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    config::{Backend, Settings, StreamKind},
    shutdown::Shutdown,
    wiring,
};

/// How long each worker may take to stop before it is abandoned (as a crash
/// would abandon it: what it had not committed is replayed).
const WORKER_STOP: Duration = Duration::from_secs(10);
/// How often the search index commits while changes arrive: how long a
/// change takes at most to be found, beyond the pipeline's delay.
const SEARCH_COMMIT_EVERY: Duration = Duration::from_millis(100);

/// A service that is bootstrapped and bound, and not yet serving.
#[derive(Debug)]
pub struct Application {
    settings: Settings,
    stop: Shutdown,
    store: Arc<dyn Store>,
    bus: Bus,
    events: Arc<dyn ingest::EventSink>,
    /// The embedded log, one instance for the API's appends and the
    /// consumer, so that an append wakes the consumer at once.
    log: StoreLog,
    shop: commerce::Shop,
    state: AppState,
    attribution: serving::attribution::Writer,
    listener: tokio::net::TcpListener,
    /// `/metrics` on its own, when `metrics_listen` is set.
    metrics_listener: Option<tokio::net::TcpListener>,
}

impl Application {
    /// Opens and checks the store, bootstraps the first admin (and the demo
    /// catalogue), and binds `listen`. `None` when a stop came first: each
    /// phase ends early or runs to completion (the short, idempotent ones),
    /// and nothing is left that the next start would not redo.
    pub async fn build(settings: Settings, stop: Shutdown) -> anyhow::Result<Option<Self>> {
        let Some(store) = stop.unless_stopped(wiring::open_store(&settings)).await else {
            return Ok(stopped_during("opening the store"));
        };
        let store = store?;
        let ready = async {
            if settings.backend == Backend::Embedded {
                store.create_tables().await?;
            }
            store.ping().await.context(
                "the store is not reachable (for backend = \"aws\", run `shopstream init` first)",
            )
        };
        let Some(ready) = stop.unless_stopped(ready).await else {
            return Ok(stopped_during("checking the store"));
        };
        ready?;
        let bus = Bus::default();
        let log = StoreLog::new(store.clone(), settings.log_partitions);
        let events = wiring::event_sink_on(&settings, &log).await?;
        let shop = wiring::shop(&settings, &store, &bus);
        let (state, attribution) = wiring::app_state(
            &settings,
            store.clone(),
            events.clone(),
            bus.clone(),
            shop.clone(),
        )
        .await?;
        bootstrap_admin(&settings, &state).await?;
        if settings.seed_demo_catalogue && !stop.requested() {
            let made = bootstrap::seed_demo_catalogue(&state).await?;
            if made > 0 {
                tracing::info!(products = made, "seeded the demo catalogue");
            }
        }
        if stop.requested() {
            return Ok(stopped_during("bootstrap"));
        }
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {} (setting `listen`)", settings.listen))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => {
                Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} (setting `metrics_listen`)")
                })?)
            }
            None => None,
        };
        Ok(Some(Self {
            settings,
            stop,
            store,
            bus,
            events,
            log,
            shop,
            state,
            attribution,
            listener,
            metrics_listener,
        }))
    }

    /// Starts the workers, serves until the stop, and stops the workers in
    /// reverse order.
    pub async fn run(self) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        if let Some(l) = &self.metrics_listener {
            // Printed before the listening line, which scripts wait for.
            println!("shopstream metrics on http://{}/metrics", l.local_addr()?);
        }
        tracing::info!(%addr, backend = self.store.backend(), "shopstream listening");
        // Tests and scripts read this line to learn the port when listening on port 0.
        println!("shopstream listening on http://{addr}");
        let mut workers = Workers::default();
        self.start_workers(&mut workers).await?;
        // Responses count what they show through it: it stops first after
        // the requests, draining its queue.
        let attribution = self.attribution;
        workers.start("attribution", |stopped| attribution.run(stopped));
        let metrics = match self.metrics_listener {
            Some(l) => {
                let stop = self.stop.clone();
                Some(tokio::spawn(api::serve_metrics(
                    l,
                    self.state.clone(),
                    async move { stop.wait().await },
                )))
            }
            None => None,
        };
        let stop = self.stop.clone();
        let serving = api::serve(self.listener, self.state, async move {
            stop.wait().await;
            tracing::info!("finishing requests in flight");
        });
        // The whole stop fits in `shutdown_grace_secs`: requests in flight get
        // half of it, the workers (checkpoints, lease releases) the rest.
        let grace = Duration::from_secs(self.settings.shutdown_grace_secs);
        let stop = self.stop.clone();
        let serving = async move {
            tokio::select! {
                served = serving => served,
                () = async {
                    stop.wait().await;
                    tokio::time::sleep(grace / 2).await;
                } => {
                    tracing::warn!(after = ?grace / 2, "requests still in flight at the stop; abandoned");
                    Ok(())
                }
            }
        };
        tokio::pin!(serving);
        let (served, failed) = tokio::select! {
            served = &mut serving => (served, None),
            ended = workers.ended() => {
                tracing::error!(worker = ended, "a worker ended before the stop; stopping the server");
                // Ends the server the same way a SIGTERM does.
                self.stop.request();
                (serving.await, Some(ended))
            }
        };
        if let Some(m) = metrics {
            match m.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
                Err(e) => tracing::warn!(error = %e, "the metrics listener panicked"),
                Ok(Ok(())) => {}
            }
        }
        let stopping = self.stop.requested_at().unwrap_or_else(Instant::now);
        workers
            .stop_in_reverse(stopping + grace.saturating_sub(Duration::from_millis(500)))
            .await;
        tracing::info!("shopstream stopped");
        served?;
        match failed {
            // A non-zero exit, so that the orchestrator restarts the task.
            Some(worker) => anyhow::bail!("the {worker} worker ended before the stop"),
            None => Ok(()),
        }
    }

    async fn start_workers(&self, workers: &mut Workers) -> anyhow::Result<()> {
        let settings = &self.settings;
        let store = &self.store;
        let products = self.state.products.clone();
        workers.start("categories", |_| async move {
            match products.index_categories().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(categories = n, "indexed the catalogue's categories"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not index the categories; retried at the next start")
                }
            }
        });
        let (products, mut changes) = (self.state.products.clone(), self.bus.subscribe());
        workers.start("product cache", |mut stopped| async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => break,
                    change = changes.recv() => match change {
                        Ok(processors::changes::Change::ProductChanged { product_id }) => {
                            match product_id.parse() {
                                Ok(id) => products.forget(id),
                                Err(_) => products.forget_all(),
                            }
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => products.forget_all(),
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        });
        let keeper = search::Keeper {
            index: self.state.search.clone(),
            products: self.state.products.clone(),
            tables: self.state.tables.clone(),
            changes: self.bus.subscribe(),
            commit_every: SEARCH_COMMIT_EVERY,
        };
        workers.start("search index", |stopped| keeper.run(stopped));
        let instance = settings.instance_id()?;
        if settings.backend == Backend::Aws {
            let feed = processors::feed::Feed {
                store: store.clone(),
                instance: instance.clone(),
                bus: self.bus.clone(),
                poll: Duration::from_millis(250),
            };
            workers.start("feed", |stopped| feed.run(stopped));
        }
        self.start_consumer(workers, instance).await;
        let (store, bus) = (store.clone(), self.bus.clone());
        workers.start("alert sweeper", |stopped| {
            processors::pipeline::sweep_alerts_periodically(
                store,
                bus,
                Duration::from_secs(60),
                stopped,
            )
        });
        let relay = commerce::outbox::Relay {
            store: self.store.clone(),
            events: self.events.clone(),
            notifier: wiring::notifier(settings).await?,
            payments: self.shop.payments().clone(),
            alerts: wiring::supplier_notifier(settings).await?,
            suppliers: commerce::suppliers::Suppliers {
                store: self.store.clone(),
            },
            wake: self.shop.outbox_wake.clone(),
        };
        workers.start("outbox relay", |mut stopped| {
            relay.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
        });
        let shop = self.shop.clone();
        let every = settings.reservation_sweep();
        workers.start("reservation sweeper", |stopped| {
            shop.sweep_reservations_periodically(every, stopped)
        });
        let recs = self.state.recs.clone();
        let retrain = serving::Retrain {
            every: Duration::from_secs(settings.recommender_train_secs),
            after_events: settings.recommender_retrain_events,
            min_gap: Duration::from_secs(settings.recommender_retrain_min_secs),
            changes: self.bus.subscribe(),
        };
        workers.start("trainer", |stopped| {
            recs.train_periodically(retrain, stopped)
        });
        Ok(())
    }

    /// The stream's shards under leases, as the `stream` setting says.
    async fn start_consumer(&self, workers: &mut Workers, instance: String) {
        let settings = &self.settings;
        let store = &self.store;
        let pipeline = Pipeline::new(store.clone(), self.bus.clone());
        let leases = Leases::new(store.clone(), instance, settings.lease_failover());
        tracing::info!(instance = leases.owner(), stream = ?settings.stream, "starting the consumer");
        match settings.stream {
            StreamKind::Embedded => {
                let consumer = LogConsumer {
                    log: self.log.clone(),
                    leases,
                    pipeline,
                    settings: settings.log_consumer(),
                };
                workers.start("consumer", |stopped| consumer.run(stopped));
            }
            StreamKind::Kinesis => {
                let consumer = KinesisConsumer {
                    client: ingest::kinesis::client_from_env().await,
                    stream: settings.kinesis_stream.clone(),
                    leases,
                    pipeline,
                    settings: KinesisSettings {
                        initial: settings.kinesis_initial_position.into(),
                        // GetRecords returns at most 10,000 records.
                        batch: settings.consumer_batch.min(10_000) as i32,
                        shard_sync: Duration::from_secs(settings.shard_sync_secs),
                        ..KinesisSettings::default()
                    },
                };
                workers.start("consumer", |stopped| consumer.run(stopped));
            }
            StreamKind::Kafka => {
                let consumer = KafkaConsumer {
                    settings: settings.kafka(),
                    leases,
                    pipeline,
                };
                workers.start("consumer", |stopped| async move {
                    if let Err(e) = consumer.run(stopped).await {
                        tracing::error!(error = %e, "the Kafka consumer stopped");
                    }
                });
            }
        }
    }
}

async fn bootstrap_admin(settings: &Settings, state: &AppState) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let password = settings
        .admin_password
        .as_ref()
        .map(|p| p.expose_secret().to_owned());
    match bootstrap::ensure_admin(state, settings.admin_email.as_deref(), password.as_deref())
        .await?
    {
        bootstrap::AdminBootstrap::Generated { email, password } => {
            // Shown once, on stdout, so that it is not kept in log files.
            println!(
                "shopstream: created the first admin\n  email:    {email}\n  password: {password}\n  (shown only this once)"
            );
        }
        bootstrap::AdminBootstrap::Configured(email) => {
            tracing::info!(%email, "admin bootstrapped")
        }
        bootstrap::AdminBootstrap::AlreadyDone => {}
    }
    Ok(())
}

/// A stop during start-up is a clean exit, not an error.
fn stopped_during(phase: &str) -> Option<Application> {
    tracing::info!(phase, "stopped during start-up");
    None
}

/// The background workers, in the order they started.
#[derive(Debug, Default)]
struct Workers {
    set: JoinSet<()>,
    /// Each worker's name and its own stop, in start order.
    started: Vec<(&'static str, watch::Sender<bool>, tokio::task::Id)>,
    names: HashMap<tokio::task::Id, &'static str>,
    /// Workers that already ended.
    finished: HashSet<tokio::task::Id>,
}

impl Workers {
    /// Starts a worker; `run` gets the receiver that turns `true` when this
    /// worker is to stop.
    fn start<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let id = self.set.spawn(run(rx)).id();
        self.started.push((name, tx, id));
        self.names.insert(id, name);
    }

    /// Returns when a long-running worker ends by itself (never, normally).
    async fn ended(&mut self) -> &'static str {
        loop {
            match self.set.join_next_with_id().await {
                Some(done) => {
                    let id = match &done {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    };
                    self.finished.insert(id);
                    let name = self.names.get(&id).copied().unwrap_or("?");
                    if let Err(e) = done {
                        tracing::error!(worker = name, error = %e, "worker failed");
                    }
                    // One-shot work is expected to end.
                    if name != "categories" {
                        return name;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Stops each worker in turn, newest first, and waits for it (up to
    /// [`WORKER_STOP`], and never past `deadline`; then abandons it).
    async fn stop_in_reverse(mut self, deadline: Instant) {
        while let Some((name, stop, id)) = self.started.pop() {
            let _ = stop.send(true);
            let finished = &mut self.finished;
            let set = &mut self.set;
            let wait = WORKER_STOP.min(deadline.saturating_duration_since(Instant::now()));
            let finished = tokio::time::timeout(wait, async {
                while !finished.contains(&id) {
                    match set.join_next_with_id().await {
                        Some(Ok((done, ()))) => finished.insert(done),
                        Some(Err(e)) => finished.insert(e.id()),
                        None => return,
                    };
                }
            })
            .await;
            match finished {
                Ok(()) => tracing::debug!(worker = name, "worker stopped"),
                Err(_) => tracing::warn!(worker = name, "worker did not stop in time; abandoned"),
            }
        }
        self.set.abort_all();
    }
}
