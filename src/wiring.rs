//! The adapters the settings choose — store, stream, blobs, notifier,
//! payments — and the API's state built from them. Settings become each
//! crate's own configuration in `config.rs`; this file only picks and
//! connects.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use api::{AppState, JwksSettings, Tokens};
use ingest::{EventSink, StoreLog, kafka::KafkaSink, kinesis::KinesisSink};
use processors::Bus;
use storage::{Store, dynamo::Dynamo, embedded::Embedded};

use crate::config::{Backend, NotifierKind, Settings, StreamKind};

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
        StreamKind::Kafka => Some(Arc::new(KafkaSink::new(&settings.kafka())?)),
    })
}

/// The stream events are published to, as configured.
pub(crate) async fn event_sink(
    settings: &Settings,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Arc<dyn EventSink>> {
    let log = StoreLog::new(store.clone(), settings.log_partitions);
    event_sink_on(settings, &log).await
}

/// [`event_sink`], with `log` as the embedded stream: the server's
/// consumer reads the same instance, so that an append wakes it at once.
pub(crate) async fn event_sink_on(
    settings: &Settings,
    log: &StoreLog,
) -> anyhow::Result<Arc<dyn EventSink>> {
    Ok(match outside_sink(settings).await? {
        Some(sink) => sink,
        None => Arc::new(log.clone()),
    })
}

/// Responses whose impression counts may wait for the attribution writer
/// (beyond that they are dropped and counted).
const IMPRESSIONS_QUEUE: usize = 4096;
/// The search index writer's buffer: it flushes a segment when full.
const SEARCH_INDEX_MEMORY: usize = 50_000_000;

/// The API's state, and the attribution writer its responses count through
/// (a worker of its own: see `app.rs`).
pub(crate) async fn app_state(
    settings: &Settings,
    store: Arc<dyn Store>,
    events: Arc<dyn EventSink>,
    bus: Bus,
    shop: commerce::Shop,
) -> anyhow::Result<(AppState, serving::attribution::Writer)> {
    let blobs = blobs(settings).await;
    // `Settings::check` makes the issuer and audience required with a URL.
    let jwks = match (
        &settings.jwks_url,
        &settings.jwks_issuer,
        &settings.jwks_audience,
    ) {
        (Some(url), Some(issuer), Some(audience)) => Some(JwksSettings {
            url: url.clone(),
            issuer: issuer.clone(),
            audience: audience.clone(),
            groups_claim: settings.jwks_groups_claim.clone(),
        }),
        _ => None,
    };
    let secret = settings.jwt_secret()?;
    let reco_ids = serving::RecoIds::new(&secret);
    let tokens = Tokens::new(
        &secret,
        Duration::from_secs(settings.access_token_ttl_secs),
        Duration::from_secs(settings.refresh_token_ttl_secs),
        jwks,
    );
    let metrics = api::install_recorder()?;
    let config = settings.api_config();
    let (impressions, attribution) =
        serving::attribution::channel(store.clone(), IMPRESSIONS_QUEUE);
    // One catalogue, one read cache: the API's reads and the
    // recommendations' rules share it.
    let products = storage::products::Products::new(store.clone());
    let recs = Arc::new(serving::Recs::new(
        store.clone(),
        products.clone(),
        blobs.clone(),
        settings.recommender_history_hours,
        impressions,
    ));
    let services = api::Services {
        store,
        products,
        events,
        bus,
        shop,
        blobs,
        recs,
        reco_ids,
        search: Arc::new(search::SearchIndex::new(SEARCH_INDEX_MEMORY)?),
    };
    Ok((
        AppState::new(services, tokens, metrics, config),
        attribution,
    ))
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

pub(crate) async fn notifier(
    settings: &Settings,
) -> anyhow::Result<Arc<dyn commerce::outbox::Notifier>> {
    Ok(match settings.notifier {
        NotifierKind::File => Arc::new(commerce::outbox::FileNotifier {
            dir: settings.data_dir.join("notifications"),
        }),
        NotifierKind::Ses => {
            let from = settings
                .ses_from
                .clone()
                .context("notifier = \"ses\" needs `ses_from`, the sender address")?;
            Arc::new(commerce::outbox::SesNotifier::from_env(from).await)
        }
        NotifierKind::Sns => {
            let topic = settings
                .sns_topic_arn
                .clone()
                .context("notifier = \"sns\" needs `sns_topic_arn`, the topic to publish to")?;
            Arc::new(commerce::outbox::SnsNotifier::from_env(topic).await)
        }
    })
}

/// Where low-stock alerts reach suppliers (`supplier_notifier`).
pub(crate) async fn supplier_notifier(
    settings: &Settings,
) -> anyhow::Result<Arc<dyn commerce::alerts::SupplierNotifier>> {
    use crate::config::SupplierNotifierKind as Kind;
    Ok(match settings.supplier_notifier {
        Kind::File => Arc::new(commerce::alerts::FileAlerts {
            dir: settings.data_dir.join("notifications"),
        }),
        Kind::Ses => {
            let from = settings
                .ses_from
                .clone()
                .context("supplier_notifier = \"ses\" needs `ses_from`, the sender address")?;
            Arc::new(commerce::outbox::SesNotifier::from_env(from).await)
        }
        Kind::Sns => {
            let topic = settings.supplier_sns_topic_arn.clone().context(
                "supplier_notifier = \"sns\" needs `supplier_sns_topic_arn`, the topic to publish to",
            )?;
            Arc::new(commerce::outbox::SnsNotifier::from_env(topic).await)
        }
        Kind::Webhook => Arc::new(commerce::alerts::WebhookAlerts::new(
            Duration::from_millis(settings.webhook_timeout_ms),
            settings.webhook_allow_http,
        )),
    })
}

pub(crate) fn shop(settings: &Settings, store: &Arc<dyn Store>, bus: &Bus) -> commerce::Shop {
    let payments = Arc::new(commerce::payment::SimulatedProcessor::new(
        store.clone(),
        Duration::from_millis(settings.payment_slow_ms),
    ));
    commerce::Shop::new(store.clone(), payments, bus.clone(), settings.shop_config())
}
