//! The `shopstream` binary: the command line and the wiring of the crates.

mod config;
mod evaluate;
mod import;
mod produce;
mod shutdown;
mod train;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use api::{ApiConfig, AppState, JwksSettings, Tokens, bootstrap};
use clap::{Parser, Subcommand};
use config::{Backend, LogFormat, Settings, StreamKind};
use domain::{Email, Role};
use ingest::{
    EventSink, Leases, LogConsumer, StoreLog,
    kafka::{KafkaConsumer, KafkaSink},
    kinesis::{KinesisConsumer, KinesisSettings, KinesisSink},
    log::ConsumerSettings,
};
use processors::{Bus, Pipeline};
use shutdown::Shutdown;
use storage::{Store, dynamo::Dynamo, embedded::Embedded};

/// Real-time inventory, analytics and recommendations for an online shop.
///
/// Settings come from built-in defaults, then `shopstream.toml`, then
/// `SHOPSTREAM_*` environment variables (see README.md).
#[derive(Debug, Parser)]
#[command(name = "shopstream", version)]
struct Cli {
    /// A TOML settings file (default: ./shopstream.toml, if present).
    #[arg(long, global = true, env = "SHOPSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default): bootstraps the first admin and, on an
    /// empty store, a demo catalogue.
    Serve,
    /// Create the tables on the configured backend, and the Kinesis stream
    /// if `stream = "kinesis"`. Safe to run again.
    Init,
    /// Publish events from a JSON-lines file (one envelope per line) to the
    /// configured stream. If a server holds the embedded store, they go
    /// through its `POST /api/events` (with `--token`).
    Produce {
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Import a data set's behaviour log as events onto the stream, oldest
    /// first (directly, or through the running server like `produce`). The
    /// mapping of each format is in the README and docs/evaluation.md.
    Import {
        /// `retailrocket` (events.csv), `movielens` (ratings.csv),
        /// `groceries` (Groceries_dataset.csv) or `jsonl` (event envelopes).
        #[arg(long)]
        format: import::Format,
        /// One or more files of that format, merged in time order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Import only the oldest N events.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// List or replay dead letters (records that were not valid events).
    /// In embedded mode, stop the server first, or use the API.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Train the recommender now on the store's interaction log (the last
    /// `recommender_history_hours`) and save the model where the servers
    /// load it from (a server restarting, or one started later, serves it).
    /// If a server holds the embedded store, it is asked to train instead
    /// (with `--token`).
    Train {
        /// The running server, for embedded mode (default: the `listen` setting).
        #[arg(long)]
        url: Option<String>,
        /// An admin access token, for training through the server.
        #[arg(long, env = "SHOPSTREAM_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Evaluate recommenders offline on an interaction log, with the
    /// chronological protocol of docs/evaluation.md: HR, MRR and NDCG at 10
    /// and 20, catalogue coverage, latency. Needs no server or store.
    Evaluate {
        /// `movielens` (ratings.csv) or `groceries` (Groceries_dataset.csv).
        #[arg(long)]
        format: evaluate::Format,
        file: PathBuf,
        /// The share of interactions, by time, to train on.
        #[arg(long, default_value_t = 0.8)]
        train_fraction: f64,
        /// Score at most this many test interactions (spread evenly).
        #[arg(long)]
        max_targets: Option<usize>,
        /// EASE learns a dense item × item matrix: on this many of the most
        /// popular items (its training time grows with the cube).
        #[arg(long, default_value_t = 1000)]
        ease_items: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where `produce` and `import` send, and in what batches.
#[derive(Debug, clap::Args)]
struct SendArgs {
    /// The running server, for embedded mode (default: the `listen` setting).
    #[arg(long)]
    url: Option<String>,
    /// An admin or service access token, for sending through the server.
    #[arg(long, env = "SHOPSTREAM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Events per request or append.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// The newest dead letters, one JSON object per line.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Put a dead letter's record back on the stream and remove it.
    Replay {
        /// The dead letter's id, as `list` shows it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user with a role. In embedded mode, stop the server first:
    /// it holds the data directory.
    Create {
        #[arg(long)]
        email: String,
        /// At least 12 characters. Prefer the environment variable, which
        /// stays out of the shell history.
        #[arg(long, env = "SHOPSTREAM_USER_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, value_parser = ["admin", "customer", "supplier", "service"])]
        role: String,
        /// Which supplier's products a supplier sees (required for suppliers).
        #[arg(long)]
        supplier_id: Option<String>,
        /// Display name (default: the part of the e-mail address before '@').
        #[arg(long)]
        name: Option<String>,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOPSTREAM_LOG")
        .unwrap_or_else(|_| "info,tower_http=info,aws_config=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub(crate) async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match settings.backend {
        Backend::Embedded => {
            let dir = settings.data_dir.clone();
            let prefix = settings.table_prefix.clone();
            let store =
                tokio::task::spawn_blocking(move || Embedded::open(&dir, &prefix)).await??;
            Arc::new(store)
        }
        Backend::Aws => Arc::new(Dynamo::from_env(&settings.table_prefix).await),
    })
}

/// The store, or `None` when a running server holds the embedded store (the
/// CLI then goes through that server's API).
pub(crate) async fn open_store_unless_served(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn Store>>> {
    match open_store(settings).await {
        Ok(store) => Ok(Some(store)),
        Err(e)
            if matches!(
                e.downcast_ref::<storage::StoreError>(),
                Some(storage::StoreError::InUse { .. })
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The outside stream events are published to, if one is configured.
pub(crate) async fn outside_sink(
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn EventSink>>> {
    Ok(match settings.stream {
        StreamKind::Embedded => None,
        StreamKind::Kinesis => Some(Arc::new(KinesisSink::new(
            ingest::kinesis::client_from_env().await,
            settings.kinesis_stream.clone(),
        ))),
        StreamKind::Kafka => Some(Arc::new(
            KafkaSink::new(&settings.kafka()).map_err(anyhow::Error::msg)?,
        )),
    })
}

/// The stream events are published to, as configured.
pub(crate) async fn event_sink(
    settings: &Settings,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Arc<dyn EventSink>> {
    Ok(match outside_sink(settings).await? {
        Some(sink) => sink,
        None => Arc::new(StoreLog::new(store.clone(), settings.log_partitions)),
    })
}

async fn app_state(
    settings: &Settings,
    store: Arc<dyn Store>,
    events: Arc<dyn EventSink>,
    bus: Bus,
    shop: commerce::Shop,
) -> anyhow::Result<AppState> {
    let blobs = blobs(settings).await;
    let jwks = settings.jwks_url.clone().map(|url| JwksSettings {
        url,
        issuer: settings.jwks_issuer.clone(),
        audience: settings.jwks_audience.clone(),
        groups_claim: settings.jwks_groups_claim.clone(),
    });
    let tokens = Tokens::new(
        &settings.jwt_secret()?,
        Duration::from_secs(settings.access_token_ttl_secs),
        Duration::from_secs(settings.refresh_token_ttl_secs),
        jwks,
    );
    let metrics = api::install_recorder()?;
    let config = ApiConfig {
        max_body_bytes: settings.max_body_bytes,
        request_timeout: Duration::from_secs(settings.request_timeout_secs),
        max_events_per_request: settings.max_events_per_request,
        lease_stream: match settings.stream {
            StreamKind::Embedded => ingest::log::STREAM.to_owned(),
            StreamKind::Kinesis => settings.kinesis_stream.clone(),
            StreamKind::Kafka => settings.kafka_topic.clone(),
        },
        image_max_bytes: settings.image_max_bytes,
        recommend_per_category: settings.recommend_per_category,
        recommend_repeat_categories: settings
            .recommend_repeat_categories
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        ws: api::ws::WsConfig {
            allowed_origins: settings
                .ws_allowed_origins
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
            max_connections_per_user: settings.ws_max_connections_per_user,
            max_subscriptions: settings.ws_max_subscriptions,
            queue: settings.ws_queue,
            ping_interval: Duration::from_secs(settings.ws_ping_secs.max(1)),
        },
    };
    let recs = Arc::new(api::recs::Recs::new(
        store.clone(),
        blobs.clone(),
        settings.recommender_history_hours,
    ));
    let services = api::Services {
        store,
        events,
        bus,
        shop,
        blobs,
        recs,
    };
    Ok(AppState::new(services, tokens, metrics, config))
}

async fn serve(settings: Settings, stop: Shutdown) -> anyhow::Result<()> {
    // Each phase of start-up ends early, and cleanly, when a stop arrives.
    let Some(store) = stop.unless_stopped(open_store(&settings)).await else {
        return stopped_during("opening the store");
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
        return stopped_during("checking the store");
    };
    ready?;
    let bus = Bus::default();
    let events = event_sink(&settings, &store).await?;
    let shop = shop(&settings, &store, &bus);
    let state = app_state(
        &settings,
        store.clone(),
        events.clone(),
        bus.clone(),
        shop.clone(),
    )
    .await?;
    let recs = state.recs.clone();
    match bootstrap::ensure_admin(
        &state,
        settings.admin_email.as_deref(),
        settings.admin_password.as_deref(),
    )
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
    if settings.seed_demo_catalogue && !stop.requested() {
        let made = bootstrap::seed_demo_catalogue(&state).await?;
        if made > 0 {
            tracing::info!(products = made, "seeded the demo catalogue");
        }
    }
    if stop.requested() {
        return stopped_during("bootstrap");
    }
    // Stores from before the category list: file every product's category,
    // once, off the request path.
    let products = state.products.clone();
    tokio::spawn(async move {
        match products.index_categories().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(categories = n, "indexed the catalogue's categories"),
            Err(e) => {
                tracing::warn!(error = %e, "could not index the categories; retried at the next start")
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} (setting `listen`)", settings.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = state.store.backend(), "shopstream listening");
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("shopstream listening on http://{addr}");

    // The pipeline: the stream's shards under leases, and the alert sweeper.
    // Each worker sees the stop on its own and releases what it holds.
    let stopped = stop.subscribe();
    let pipeline = Pipeline::new(store.clone(), bus.clone());
    let instance = settings.instance_id()?;
    let leases = Leases::new(
        store.clone(),
        instance.clone(),
        Duration::from_secs(settings.lease_failover_secs),
    );
    tracing::info!(instance = leases.owner(), stream = ?settings.stream, "starting the consumer");
    let consumer = match settings.stream {
        StreamKind::Embedded => tokio::spawn(
            LogConsumer {
                log: StoreLog::new(store.clone(), settings.log_partitions),
                leases,
                pipeline,
                settings: ConsumerSettings {
                    batch: settings.consumer_batch,
                    ..ConsumerSettings::default()
                },
            }
            .run(stopped.clone()),
        ),
        StreamKind::Kinesis => tokio::spawn(
            KinesisConsumer {
                client: ingest::kinesis::client_from_env().await,
                stream: settings.kinesis_stream.clone(),
                leases,
                pipeline,
                settings: KinesisSettings {
                    initial: match settings.kinesis_initial_position {
                        config::InitialPosition::TrimHorizon => {
                            ingest::kinesis::InitialPosition::TrimHorizon
                        }
                        config::InitialPosition::Latest => ingest::kinesis::InitialPosition::Latest,
                    },
                    batch: settings.consumer_batch as i32,
                    shard_sync: Duration::from_secs(settings.shard_sync_secs),
                    ..KinesisSettings::default()
                },
            }
            .run(stopped.clone()),
        ),
        StreamKind::Kafka => {
            let consumer = KafkaConsumer {
                settings: settings.kafka(),
                leases,
                pipeline,
            };
            let stopped = stopped.clone();
            tokio::spawn(async move {
                if let Err(e) = consumer.run(stopped).await {
                    tracing::error!(error = %e, "the Kafka consumer stopped");
                }
            })
        }
    };
    // Instances sharing a store see each other's changes through it.
    let feed = (settings.backend == Backend::Aws).then(|| {
        tokio::spawn(
            processors::feed::Feed {
                store: store.clone(),
                instance,
                bus: bus.clone(),
                poll: Duration::from_millis(250),
            }
            .run(stopped.clone()),
        )
    });
    let trained_after = bus.subscribe();
    let sweeper = tokio::spawn(sweep_alerts_periodically(
        store.clone(),
        bus,
        stopped.clone(),
    ));
    // What follows commerce's commits: events, notifications, refunds.
    let relay = commerce::outbox::Relay {
        store,
        events,
        notifier: notifier(&settings).await?,
        payments: shop.payments().clone(),
        wake: shop.outbox_wake.clone(),
    };
    let mut relay_stopped = stopped.clone();
    let relay = tokio::spawn(relay.run(async move {
        let _ = relay_stopped.changed().await;
    }));
    let reservations = tokio::spawn(sweep_reservations_periodically(
        shop,
        Duration::from_secs(settings.reservation_sweep_secs.max(1)),
        stopped.clone(),
    ));
    let trainer = tokio::spawn(train_periodically(
        recs,
        Retrain {
            every: Duration::from_secs(settings.recommender_train_secs),
            after_events: settings.recommender_retrain_events,
            changes: trained_after,
        },
        stopped,
    ));

    let requests = stop.clone();
    api::serve(listener, state, async move {
        requests.wait().await;
        tracing::info!("finishing requests in flight");
    })
    .await?;
    // Requests are done, and the workers, which saw the same stop, release
    // their leases.
    let _ = consumer.await;
    let _ = sweeper.await;
    let _ = relay.await;
    let _ = reservations.await;
    let _ = trainer.await;
    if let Some(feed) = feed {
        let _ = feed.await;
    }
    tracing::info!("shopstream stopped");
    Ok(())
}

/// Where product images and the recommender's model are kept: S3 with `images_bucket`, else the data dir.
pub(crate) async fn blobs(settings: &Settings) -> Arc<dyn storage::blobs::Blobs> {
    match &settings.images_bucket {
        Some(bucket) => Arc::new(storage::blobs::S3Blobs::from_env(bucket.clone()).await),
        None => Arc::new(storage::blobs::DirBlobs {
            dir: settings.data_dir.clone(),
        }),
    }
}

async fn notifier(settings: &Settings) -> anyhow::Result<Arc<dyn commerce::outbox::Notifier>> {
    Ok(match settings.notifier {
        config::NotifierKind::File => Arc::new(commerce::outbox::FileNotifier {
            dir: settings.data_dir.join("notifications"),
        }),
        config::NotifierKind::Ses => {
            let from = settings
                .ses_from
                .clone()
                .context("notifier = \"ses\" needs `ses_from`, the sender address")?;
            Arc::new(commerce::outbox::SesNotifier::from_env(from).await)
        }
        config::NotifierKind::Sns => {
            let topic = settings
                .sns_topic_arn
                .clone()
                .context("notifier = \"sns\" needs `sns_topic_arn`, the topic to publish to")?;
            Arc::new(commerce::outbox::SnsNotifier::from_env(topic).await)
        }
    })
}

fn shop(settings: &Settings, store: &Arc<dyn Store>, bus: &Bus) -> commerce::Shop {
    let payments = Arc::new(commerce::payment::SimulatedProcessor::new(
        store.clone(),
        Duration::from_millis(settings.payment_slow_ms),
    ));
    commerce::Shop::new(
        store.clone(),
        payments,
        bus.clone(),
        commerce::ShopConfig {
            max_quantity: settings.max_quantity,
            basket_idle: Duration::from_secs(settings.basket_idle_secs),
            reservation_ttl: Duration::from_secs(settings.reservation_ttl_secs),
            payment_timeout: Duration::from_millis(settings.payment_timeout_ms),
            ..commerce::ShopConfig::default()
        },
    )
}

/// When the recommender retrains.
struct Retrain {
    /// On a schedule (zero: never).
    every: Duration,
    /// When this many behaviour events (views, basket adds, purchases) were
    /// applied since the last run (zero: never).
    after_events: u64,
    /// The bus, whose analytics ticks count the events applied.
    changes: tokio::sync::broadcast::Receiver<processors::changes::Change>,
}

/// Serves the persisted model at once, trains one if there is none, then
/// retrains on the schedule and when enough new events arrived — off the
/// request path throughout.
async fn train_periodically(
    recs: Arc<api::recs::Recs>,
    mut when: Retrain,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use processors::changes::Change;
    use tokio::sync::broadcast::error::RecvError;
    let loaded = tokio::select! {
        loaded = recs.load() => loaded,
        _ = stopped.changed() => return,
    };
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(error = %e, "recommender: the persisted model was not loaded");
            false
        }
    };
    let mut due = !loaded;
    let mut next = tokio::time::Instant::now() + when.every;
    let mut new_events = 0u64;
    loop {
        if due {
            due = false;
            new_events = 0;
            next = tokio::time::Instant::now() + when.every;
            // A stop abandons the training: the model is swapped in only
            // once it is complete, so nothing is left half-done.
            let trained = tokio::select! {
                trained = recs.train(Arc::new(|_| ())) => trained,
                _ = stopped.changed() => return,
            };
            if let Err(e) = trained {
                tracing::info!(error = %e, "recommender: no new model (popularity answers meanwhile)")
            }
        }
        let every = when.every;
        let scheduled = async move {
            if every.is_zero() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(next).await;
        };
        tokio::select! {
            () = scheduled => due = true,
            change = when.changes.recv(), if when.after_events > 0 => {
                new_events += match change {
                    Ok(Change::AnalyticsTick { views, basket_adds, purchases, .. }) => {
                        (views + basket_adds + purchases).max(0) as u64
                    }
                    Ok(_) => 0,
                    // Missed changes were mostly ticks: count them as one
                    // event each, a lower bound.
                    Err(RecvError::Lagged(n)) => n,
                    Err(RecvError::Closed) => {
                        when.after_events = 0;
                        0
                    }
                };
                if new_events >= when.after_events {
                    tracing::info!(events = new_events, "recommender: enough new events, retraining");
                    due = true;
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

/// Releases the stock of checkouts whose payment never settled.
async fn sweep_reservations_periodically(
    shop: commerce::Shop,
    every: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match shop.sweep_reservations().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(orders = n, "released expired reservations"),
            Err(e) => tracing::warn!(error = %e, "reservation sweep failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Checks every product's low-stock state at start and then every minute, to
/// raise alerts whose check a crash interrupted.
async fn sweep_alerts_periodically(
    store: Arc<dyn Store>,
    bus: Bus,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match processors::pipeline::sweep_alerts(store.as_ref(), &bus).await {
            Ok(n) => tracing::debug!(products = n, "low-stock sweep done"),
            Err(e) => tracing::warn!(error = %e, "low-stock sweep failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// A stop during start-up is a clean exit, not an error.
fn stopped_during(phase: &str) -> anyhow::Result<()> {
    tracing::info!(phase, "stopped during start-up");
    Ok(())
}

async fn create_user(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create {
        email,
        password,
        role,
        supplier_id,
        name,
    } = command;
    let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    domain::user::check_password(&password).map_err(|e| anyhow::anyhow!("--password {e}"))?;
    if role == Role::Supplier && supplier_id.is_none() {
        anyhow::bail!("--supplier-id is required for a supplier");
    }
    if role != Role::Supplier && supplier_id.is_some() {
        anyhow::bail!("--supplier-id is only for suppliers");
    }
    let name = name.unwrap_or_else(|| {
        email
            .as_str()
            .split('@')
            .next()
            .unwrap_or("user")
            .to_owned()
    });
    let store = open_store(settings).await?;
    let events = event_sink(settings, &store).await?;
    let bus = Bus::default();
    let shop = shop(settings, &store, &bus);
    let state = app_state(settings, store, events, bus, shop).await?;
    let user = api::create_user(&state, email, password, name, role, supplier_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("created {} {} ({})", user.role, user.email, user.id);
    Ok(())
}

async fn dead_letters(settings: &Settings, command: DeadLetterCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match command {
        DeadLetterCommand::List { limit } => {
            let (items, _) =
                processors::read::dead_letters(store.as_ref(), limit.clamp(1, 1000), None).await?;
            for (id, d) in items {
                let line = serde_json::json!({
                    "id": id, "reason": d.reason, "detail": d.detail, "stream": d.stream,
                    "shard": d.shard, "position": d.position, "at": d.at,
                    "raw": String::from_utf8_lossy(&d.raw),
                });
                println!("{line}");
            }
        }
        DeadLetterCommand::Replay { id } => {
            let sink = event_sink(settings, &store).await?;
            match sink.replay_dead_letter(store.as_ref(), &id).await? {
                Some(to) => println!("replayed {id} to {to}"),
                None => anyhow::bail!("no dead letter {id}"),
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shopstream: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Work abandoned by a stop (a model fit, a store being opened) may still
    // run on the blocking pool: give it a moment, never wait forever.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    // Serving catches SIGINT/SIGTERM from its first moment, before the
    // settings are read or the store is opened.
    let stop = match command {
        Command::Serve => match Shutdown::on_signals() {
            Ok(stop) => Some(stop),
            Err(e) => {
                eprintln!("shopstream: cannot handle signals: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let settings = match load_settings(cli.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let result = match command {
        Command::Serve => match stop {
            Some(stop) => serve(settings, stop).await,
            None => Err(anyhow::anyhow!("signal handlers were not registered")),
        },
        Command::Init => {
            async {
                let store = open_store(&settings).await?;
                store.create_tables().await?;
                println!(
                    "tables ready on the {} backend (prefix {:?})",
                    store.backend(),
                    settings.table_prefix
                );
                if settings.stream == StreamKind::Kinesis {
                    let client = ingest::kinesis::client_from_env().await;
                    ingest::kinesis::ensure_stream(
                        &client,
                        &settings.kinesis_stream,
                        settings.kinesis_shards,
                    )
                    .await
                    .map_err(anyhow::Error::msg)?;
                    println!("kinesis stream {:?} active", settings.kinesis_stream);
                }
                if settings.stream == StreamKind::Kafka {
                    ingest::kafka::ensure_topic(&settings.kafka(), settings.kafka_partitions)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    println!("kafka topic {:?} ready", settings.kafka_topic);
                }
                if settings.images_bucket.is_some() {
                    let blobs = blobs(&settings).await;
                    blobs.create().await?;
                    println!("image storage {} ready", blobs.describe());
                }
                Ok(())
            }
            .await
        }
        Command::User { command } => create_user(&settings, command).await,
        Command::Train { url, token } => train::run(&settings, url, token).await,
        Command::Evaluate {
            format,
            file,
            train_fraction,
            max_targets,
            ease_items,
            json,
        } => tokio::task::spawn_blocking(move || {
            evaluate::run(format, &file, train_fraction, max_targets, ease_items, json)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r),
        Command::DeadLetters { command } => dead_letters(&settings, command).await,
        Command::Produce { file, send } => {
            produce::run(&settings, file, send.url, send.token, send.batch).await
        }
        Command::Import {
            format,
            files,
            limit,
            send,
        } => produce::import(&settings, format, files, limit, send).await,
    };
    exit_code(result)
}

/// The settings, or the exit code for settings that cannot be used.
fn load_settings(file: Option<PathBuf>) -> Result<Settings, std::process::ExitCode> {
    match Settings::load(file) {
        Ok(settings) => {
            init_tracing(settings.log_format);
            Ok(settings)
        }
        Err(e) => {
            eprintln!("shopstream: {e:#}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopstream: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
