//! [`AppState`]: what every handler can reach — the owners of the tables,
//! never the raw store.

use std::sync::Arc;

use ingest::EventSink;
use metrics_exporter_prometheus::PrometheusHandle;
use processors::Bus;
use storage::{Store, products::Products, users::Users};

use crate::{ApiConfig, Tokens, ws};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Private: handlers read and write through the owners of the tables
    /// (`tables`, `users`, `products`, `shop`, `recs`), never the raw store.
    store: Arc<dyn Store>,
    /// The pipeline's tables, typed.
    pub tables: processors::Tables,
    /// Supplier records (contact e-mail, webhook URL).
    pub suppliers: commerce::suppliers::Suppliers,
    /// The stream's leases, to show them.
    pub leases: ingest::Leases,
    pub users: Users,
    pub products: Products,
    pub events: Arc<dyn EventSink>,
    /// What the pipeline changed, for live pushes.
    pub bus: Bus,
    /// Baskets, checkout and orders.
    pub shop: commerce::Shop,
    pub tokens: Arc<Tokens>,
    pub metrics: PrometheusHandle,
    pub config: Arc<ApiConfig>,
    /// Open websocket connections.
    pub hub: Arc<ws::Hub>,
    /// Where product images are kept.
    pub blobs: Arc<dyn storage::blobs::Blobs>,
    /// The recommender being served.
    pub recs: Arc<serving::Recs>,
    /// Issues and verifies recommendation ids.
    pub reco_ids: serving::RecoIds,
    /// Rate limits and the bound on password hashing.
    pub limits: Arc<crate::limits::Limits>,
    /// The catalogue's search index, kept by its worker.
    pub search: Arc<search::SearchIndex>,
    /// Sign-in to the pages through the external issuer, if configured.
    pub oidc: Option<Arc<crate::routes::oidc::Oidc>>,
}

/// The services the API runs on.
#[derive(Debug)]
pub struct Services {
    pub store: Arc<dyn Store>,
    /// The catalogue, with the read cache the recommendations share.
    pub products: Products,
    pub events: Arc<dyn EventSink>,
    pub bus: Bus,
    pub shop: commerce::Shop,
    pub blobs: Arc<dyn storage::blobs::Blobs>,
    pub recs: Arc<serving::Recs>,
    pub reco_ids: serving::RecoIds,
    pub search: Arc<search::SearchIndex>,
}

impl AppState {
    pub fn new(
        services: Services,
        tokens: Tokens,
        metrics: PrometheusHandle,
        config: ApiConfig,
    ) -> Self {
        let Services {
            store,
            products,
            events,
            bus,
            shop,
            blobs,
            recs,
            reco_ids,
            search,
        } = services;
        let hub = Arc::new(ws::Hub::new(config.ws.tick));
        let oidc = config
            .oidc
            .clone()
            .map(|s| Arc::new(crate::routes::oidc::Oidc::new(s)));
        Self {
            shop,
            tables: processors::Tables::new(store.clone(), recs.trending().clone()),
            leases: ingest::Leases::new(store.clone(), "api", std::time::Duration::ZERO),
            users: Users::new(store.clone()),
            suppliers: commerce::suppliers::Suppliers {
                store: store.clone(),
            },
            products,
            store,
            events,
            bus,
            tokens: Arc::new(tokens),
            metrics,
            limits: Arc::new(crate::limits::Limits::new(config.limits.clone())),
            config: Arc::new(config),
            hub,
            blobs,
            recs,
            reco_ids,
            search,
            oidc,
        }
    }
}

impl AppState {
    /// `id` if this service issued it to `subject` (a store key,
    /// `user:…`/`session:…`) and it is still fresh; else `None`, counted.
    pub fn verified_reco_id(&self, id: Option<String>, subject: Option<&str>) -> Option<String> {
        let id = id?;
        let now = domain::clock::now_ms() / 1000;
        if self.reco_ids.verify(&id, subject, now) {
            Some(id)
        } else {
            metrics::counter!("shopstream_recommendation_ids_refused_total").increment(1);
            None
        }
    }

    /// Whether the store answers (`/readyz`).
    pub async fn ready(&self) -> Result<(), storage::StoreError> {
        self.store.ping().await
    }

    /// Puts a dead letter's record back on the stream; where it went, or
    /// `None` when there is no such dead letter.
    pub async fn replay_dead_letter(
        &self,
        id: &str,
    ) -> Result<Option<String>, ingest::PublishError> {
        self.events
            .replay_dead_letter(self.store.as_ref(), id)
            .await
    }

    /// The store, for the first-start bootstrap only.
    pub(crate) fn bootstrap_store(&self) -> &dyn Store {
        self.store.as_ref()
    }
}
