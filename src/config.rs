//! Typed settings, loaded in layers: built-in defaults < `shopstream.toml`
//! (or the file named by `--config` / `SHOPSTREAM_CONFIG`) < environment
//! variables `SHOPSTREAM_*` (e.g. `SHOPSTREAM_LISTEN=0.0.0.0:8080`).
//! A wrong or unknown setting stops start-up with a message naming it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// redb file and log in `data_dir`; nothing else to run.
    Embedded,
    /// DynamoDB through the AWS SDK's default chain (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, credentials).
    Aws,
}

/// Where events are published and consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// The durable log in the store (default; no outside service).
    Embedded,
    /// An Amazon Kinesis data stream (`kinesis_stream`).
    Kinesis,
    /// A Kafka topic (`kafka_topic` on `kafka_brokers`), read as a member of
    /// the consumer group `kafka_group`.
    Kafka,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialPosition {
    TrimHorizon,
    Latest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting. README.md lists them with their meaning.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub backend: Backend,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Serve `/metrics` on this address alone (off the public listener);
    /// unset: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    pub table_prefix: String,
    /// HS256 key for our tokens, at least 32 characters. Embedded mode makes
    /// one in `data_dir` on first start if unset; AWS mode requires it.
    /// Never printed (`Debug` shows it redacted) and never serialized.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub admin_email: Option<String>,
    #[serde(skip_serializing)]
    pub admin_password: Option<SecretString>,
    pub seed_demo_catalogue: bool,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    pub log_format: LogFormat,
    pub jwks_url: Option<String>,
    pub jwks_issuer: Option<String>,
    pub jwks_audience: Option<String>,
    pub jwks_groups_claim: String,
    /// The app client the storefront and dashboard sign in with at the
    /// issuer `jwks_issuer` (OpenID Connect code flow with PKCE); unset:
    /// the pages sign in with local accounts only.
    pub oidc_client_id: Option<String>,
    /// That client's secret, if it has one. Never printed or serialized.
    #[serde(skip_serializing)]
    pub oidc_client_secret: Option<SecretString>,
    /// The address browsers reach this service at (`https://shop.example`),
    /// for the sign-in's redirect URI `{public_url}/api/auth/oidc/callback`.
    pub public_url: Option<String>,
    /// How long a sign-in through the issuer lasts, refreshes included; then
    /// the pages send the user back to the issuer, which has their current
    /// groups (a role taken away there is gone here by then).
    pub oidc_session_secs: u64,
    pub log_partitions: u32,
    pub max_events_per_request: usize,
    /// How far the `occurred_at` of a browser's or customer's event may be
    /// from the server's clock before it is clamped.
    pub collector_clock_skew_secs: u64,
    /// Rate limits (per minute; 0 turns one off) and the hashing bound.
    pub limit_auth_per_address_per_minute: u32,
    pub limit_auth_per_account_per_minute: u32,
    pub limit_collector_per_address_per_minute: u32,
    pub limit_collector_per_session_per_minute: u32,
    pub limit_ws_anonymous_per_address: usize,
    pub limit_ws_snapshots_per_minute: u32,
    pub hash_concurrency: usize,
    /// Comma-separated addresses or ranges (`10.0.0.0/8`) whose
    /// `X-Forwarded-For` is believed; empty: nobody's.
    pub trusted_proxies: String,
    pub consumer_batch: usize,
    pub lease_failover_secs: u64,
    pub stream: StreamKind,
    pub kinesis_stream: String,
    /// Shards `shopstream init` creates the stream with.
    pub kinesis_shards: i32,
    pub kinesis_initial_position: InitialPosition,
    pub shard_sync_secs: u64,
    pub kafka_brokers: String,
    pub kafka_topic: String,
    pub kafka_group: String,
    /// Partitions `shopstream init` creates the topic with.
    pub kafka_partitions: i32,
    pub kafka_session_timeout_ms: u64,
    /// The most units of one product in a basket.
    pub max_quantity: i64,
    /// A basket left alone this long is gone.
    pub basket_idle_secs: u64,
    /// How long checkout holds stock for a payment to settle.
    pub reservation_ttl_secs: u64,
    /// How often expired reservations are looked for.
    pub reservation_sweep_secs: u64,
    /// How long the payment processor may take to answer.
    pub payment_timeout_ms: u64,
    /// How long the simulated processor's slow test card takes.
    pub payment_slow_ms: u64,
    /// Browser origins allowed to open `/ws` besides the server's own host,
    /// comma-separated (e.g. `https://shop.example`).
    pub ws_allowed_origins: String,
    pub ws_max_connections_per_user: usize,
    pub ws_max_subscriptions: usize,
    /// Messages a websocket may have waiting before it is cut off as too slow.
    pub ws_queue: usize,
    /// At most one stock frame per websocket per this many milliseconds:
    /// changes in between are merged, latest value per product.
    pub ws_tick_ms: u64,
    pub ws_ping_secs: u64,
    /// The largest product image accepted, in bytes.
    pub image_max_bytes: usize,
    /// Keep product images in this S3 bucket (unset: `data_dir/images`).
    pub images_bucket: Option<String>,
    /// Where order notifications go: `file` (a file per notification in
    /// `data_dir/notifications` and a log line), `ses` (e-mail) or `sns`
    /// (a message on an SNS topic).
    pub notifier: NotifierKind,
    /// The sender address of e-mailed notifications (verified in SES).
    pub ses_from: Option<String>,
    /// The topic notifications are published to with `notifier = "sns"`.
    pub sns_topic_arn: Option<String>,
    /// How low-stock alerts reach suppliers: `file` (a file per alert in
    /// `data_dir/notifications`), `ses` (e-mail to the supplier's contact
    /// address, from `ses_from`), `sns` (a message on
    /// `supplier_sns_topic_arn` with the attribute `supplier_id`) or
    /// `webhook` (an HMAC-signed POST to the supplier's webhook URL).
    pub supplier_notifier: SupplierNotifierKind,
    /// The topic supplier alerts are published to with
    /// `supplier_notifier = "sns"`.
    pub supplier_sns_topic_arn: Option<String>,
    /// Accept `http://` supplier webhook URLs (only for tests and private
    /// networks; otherwise `https://` only).
    pub webhook_allow_http: bool,
    /// How long a supplier's webhook may take to answer.
    pub webhook_timeout_ms: u64,
    /// Export traces by OTLP/gRPC to this collector (e.g.
    /// `http://127.0.0.1:4317`, the ADOT sidecar on ECS); unset: off.
    pub otel_endpoint: Option<String>,
    /// The share of new traces kept (0 to 1); a request that carries a
    /// sampled `traceparent` is always kept.
    pub otel_sampling_ratio: f64,
    /// On SIGTERM, how long the server may take to finish requests, close
    /// websockets (1001), checkpoint and release its leases before it gives
    /// up on what is left. Keep it below the orchestrator's stop timeout
    /// (ECS: `stopTimeout`, default 30 s).
    pub shutdown_grace_secs: u64,
    /// Retrain the recommender this often, in seconds (0: only on
    /// `POST /api/admin/model/train` or `shopstream train`).
    pub recommender_train_secs: u64,
    /// Retrain the recommender when this many views, basket adds and
    /// purchases were applied since its last run (0: never).
    pub recommender_retrain_events: u64,
    /// The least seconds between the starts of two retrainings that new
    /// events set off.
    pub recommender_retrain_min_secs: u64,
    /// How many hours of the interaction log the recommender learns from.
    pub recommender_history_hours: i64,
    /// At most this many recommended items per category in one response.
    pub recommend_per_category: usize,
    /// Categories whose bought items may be recommended again,
    /// comma-separated (e.g. `groceries,pet food`).
    pub recommend_repeat_categories: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplierNotifierKind {
    File,
    Ses,
    Sns,
    Webhook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    File,
    Ses,
    Sns,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            table_prefix: "shopstream_".into(),
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            admin_email: None,
            admin_password: None,
            seed_demo_catalogue: true,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            log_format: LogFormat::Text,
            jwks_url: None,
            jwks_issuer: None,
            jwks_audience: None,
            jwks_groups_claim: "cognito:groups".into(),
            oidc_client_id: None,
            oidc_client_secret: None,
            public_url: None,
            oidc_session_secs: 8 * 3600,
            log_partitions: ingest::log::DEFAULT_PARTITIONS,
            max_events_per_request: 500,
            collector_clock_skew_secs: 30,
            limit_auth_per_address_per_minute: api::limits::LimitsConfig::default()
                .auth_per_address_per_minute,
            limit_auth_per_account_per_minute: api::limits::LimitsConfig::default()
                .auth_per_account_per_minute,
            limit_collector_per_address_per_minute: api::limits::LimitsConfig::default()
                .collector_per_address_per_minute,
            limit_collector_per_session_per_minute: api::limits::LimitsConfig::default()
                .collector_per_session_per_minute,
            limit_ws_anonymous_per_address: api::limits::LimitsConfig::default()
                .ws_anonymous_per_address,
            limit_ws_snapshots_per_minute: api::limits::LimitsConfig::default()
                .ws_snapshots_per_minute,
            hash_concurrency: api::limits::LimitsConfig::default().hash_concurrency,
            trusted_proxies: String::new(),
            consumer_batch: 50_000,
            lease_failover_secs: 10,
            stream: StreamKind::Embedded,
            kinesis_stream: "shopstream-events".into(),
            kinesis_shards: 4,
            kinesis_initial_position: InitialPosition::TrimHorizon,
            shard_sync_secs: 10,
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_topic: "shopstream-events".into(),
            kafka_group: "shopstream".into(),
            kafka_partitions: 4,
            kafka_session_timeout_ms: 10_000,
            max_quantity: 99,
            basket_idle_secs: 7 * 24 * 3600,
            reservation_ttl_secs: 15 * 60,
            reservation_sweep_secs: 5,
            payment_timeout_ms: 10_000,
            payment_slow_ms: 30_000,
            ws_allowed_origins: String::new(),
            ws_max_connections_per_user: 5,
            ws_max_subscriptions: 20,
            ws_queue: 256,
            ws_tick_ms: 20,
            ws_ping_secs: 20,
            image_max_bytes: 2 * 1024 * 1024,
            images_bucket: None,
            notifier: NotifierKind::File,
            ses_from: None,
            sns_topic_arn: None,
            supplier_notifier: SupplierNotifierKind::File,
            supplier_sns_topic_arn: None,
            webhook_allow_http: false,
            webhook_timeout_ms: 10_000,
            otel_endpoint: None,
            otel_sampling_ratio: 1.0,
            shutdown_grace_secs: 25,
            recommender_train_secs: 600,
            recommender_retrain_events: 10_000,
            recommender_retrain_min_secs: 60,
            recommender_history_hours: 30 * 24,
            recommend_per_category: 3,
            recommend_repeat_categories: String::new(),
        }
    }
}

/// Variables with the prefix that are not settings (read by tests or by
/// this loader itself).
const NOT_SETTINGS: &[&str] = &["config", "log", "user_password"];

/// Names each setting at fault and where its value came from.
fn describe(errors: figment::Error) -> anyhow::Error {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            if key.is_empty() {
                format!("{} (in {source})", e.kind)
            } else {
                format!("setting `{key}` (from {source}): {}", e.kind)
            }
        })
        .collect();
    anyhow::anyhow!("invalid configuration: {}", lines.join("; "))
}

impl Settings {
    pub fn load(file: Option<PathBuf>) -> anyhow::Result<Self> {
        let explicit = file.is_some();
        let file = file.unwrap_or_else(|| PathBuf::from("shopstream.toml"));
        if explicit && !file.exists() {
            bail!("config file {} does not exist", file.display());
        }
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(&file))
            .merge(Env::prefixed("SHOPSTREAM_").filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("test_")
            }))
            .extract()
            .map_err(describe)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn kafka(&self) -> ingest::kafka::KafkaSettings {
        ingest::kafka::KafkaSettings {
            brokers: self.kafka_brokers.clone(),
            topic: self.kafka_topic.clone(),
            group: self.kafka_group.clone(),
            batch: self.consumer_batch,
            linger: std::time::Duration::from_millis(100),
            session_timeout: std::time::Duration::from_millis(self.kafka_session_timeout_ms),
        }
    }

    /// The API's limits, as the settings give them.
    pub fn api_config(&self) -> api::ApiConfig {
        api::ApiConfig {
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_events_per_request: self.max_events_per_request,
            clock_skew: Duration::from_secs(self.collector_clock_skew_secs),
            lease_stream: match self.stream {
                StreamKind::Embedded => ingest::log::STREAM.to_owned(),
                StreamKind::Kinesis => self.kinesis_stream.clone(),
                StreamKind::Kafka => self.kafka_topic.clone(),
            },
            image_max_bytes: self.image_max_bytes,
            metrics_on_api: self.metrics_listen.is_none(),
            limits: api::limits::LimitsConfig {
                auth_per_address_per_minute: self.limit_auth_per_address_per_minute,
                auth_per_account_per_minute: self.limit_auth_per_account_per_minute,
                collector_per_address_per_minute: self.limit_collector_per_address_per_minute,
                collector_per_session_per_minute: self.limit_collector_per_session_per_minute,
                ws_anonymous_per_address: self.limit_ws_anonymous_per_address,
                ws_snapshots_per_minute: self.limit_ws_snapshots_per_minute,
                hash_concurrency: self.hash_concurrency,
                // Checked by `check`.
                trusted_proxies: list(&self.trusted_proxies)
                    .iter()
                    .filter_map(|c| c.parse().ok())
                    .collect(),
            },
            recommend_per_category: self.recommend_per_category,
            recommend_repeat_categories: list(&self.recommend_repeat_categories),
            webhook_allow_http: self.webhook_allow_http,
            oidc: self.oidc(),
            oidc_session: Duration::from_secs(self.oidc_session_secs),
            ws: api::ws::WsConfig {
                allowed_origins: list(&self.ws_allowed_origins),
                max_connections_per_user: self.ws_max_connections_per_user,
                max_subscriptions: self.ws_max_subscriptions,
                queue: self.ws_queue,
                ping_interval: Duration::from_secs(self.ws_ping_secs),
                tick: Duration::from_millis(self.ws_tick_ms),
            },
        }
    }

    /// The pages' sign-in through the external issuer (`validate` requires the
    /// issuer, its keys and `public_url` with a client id).
    fn oidc(&self) -> Option<api::OidcSettings> {
        let client_id = self.oidc_client_id.clone()?;
        let issuer = self.jwks_issuer.as_deref()?.trim_end_matches('/');
        let public = self.public_url.as_deref()?.trim_end_matches('/');
        Some(api::OidcSettings {
            discovery_url: format!("{issuer}/.well-known/openid-configuration"),
            client_id,
            client_secret: self.oidc_client_secret.clone(),
            redirect_url: format!("{public}/api/auth/oidc/callback"),
            public_url: public.to_owned(),
        })
    }

    /// The shop's limits and timings.
    pub fn shop_config(&self) -> commerce::ShopConfig {
        commerce::ShopConfig {
            max_quantity: self.max_quantity,
            basket_idle: Duration::from_secs(self.basket_idle_secs),
            reservation_ttl: Duration::from_secs(self.reservation_ttl_secs),
            payment_timeout: Duration::from_millis(self.payment_timeout_ms),
            ..commerce::ShopConfig::default()
        }
    }

    /// How often expired reservations are looked for.
    pub fn reservation_sweep(&self) -> Duration {
        Duration::from_secs(self.reservation_sweep_secs)
    }

    /// How long a lease lives without renewal.
    pub fn lease_failover(&self) -> Duration {
        Duration::from_secs(self.lease_failover_secs)
    }

    /// The embedded log's consumer.
    pub fn log_consumer(&self) -> ingest::log::ConsumerSettings {
        ingest::log::ConsumerSettings {
            batch: self.consumer_batch,
            ..ingest::log::ConsumerSettings::default()
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.jwt_secret
            && s.expose_secret().len() < 32
        {
            bail!(
                "invalid configuration: jwt_secret (SHOPSTREAM_JWT_SECRET) must be at least 32 characters"
            );
        }
        if self.backend == Backend::Aws && self.jwt_secret.is_none() {
            bail!(
                "invalid configuration: jwt_secret (SHOPSTREAM_JWT_SECRET) must be set when backend = \"aws\", \
                 so that every instance signs with the same key"
            );
        }
        if self.admin_email.is_some() != self.admin_password.is_some() {
            bail!("invalid configuration: admin_email and admin_password must be set together");
        }
        if !self
            .table_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            bail!(
                "invalid configuration: table_prefix may contain only letters, digits, '_', '-' and '.'"
            );
        }
        for (name, value) in [
            ("access_token_ttl_secs", self.access_token_ttl_secs),
            ("refresh_token_ttl_secs", self.refresh_token_ttl_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("reservation_sweep_secs", self.reservation_sweep_secs),
            ("ws_ping_secs", self.ws_ping_secs),
            ("ws_queue", self.ws_queue as u64),
            ("ws_tick_ms", self.ws_tick_ms),
            ("ws_max_subscriptions", self.ws_max_subscriptions as u64),
            (
                "ws_max_connections_per_user",
                self.ws_max_connections_per_user as u64,
            ),
            ("recommend_per_category", self.recommend_per_category as u64),
            ("max_quantity", self.max_quantity.max(0) as u64),
            ("basket_idle_secs", self.basket_idle_secs),
            ("reservation_ttl_secs", self.reservation_ttl_secs),
            ("payment_timeout_ms", self.payment_timeout_ms),
            ("oidc_session_secs", self.oidc_session_secs),
        ] {
            if value == 0 {
                bail!("invalid configuration: {name} must be more than 0");
            }
        }
        if self.max_body_bytes < 1024 {
            bail!("invalid configuration: max_body_bytes must be at least 1024");
        }
        if !(1..=10_000).contains(&self.max_events_per_request) {
            bail!("invalid configuration: max_events_per_request must be from 1 to 10000");
        }
        if self.jwks_url.is_some() {
            for (name, value) in [
                ("jwks_issuer", &self.jwks_issuer),
                ("jwks_audience", &self.jwks_audience),
            ] {
                if value.as_deref().is_none_or(str::is_empty) {
                    bail!(
                        "invalid configuration: {name} is required with jwks_url (tokens are accepted only \
                         with that iss, and that aud or Cognito client_id)"
                    );
                }
            }
        }
        if self.oidc_client_id.is_some() {
            if self.jwks_url.is_none() {
                bail!(
                    "invalid configuration: oidc_client_id needs jwks_url, jwks_issuer and jwks_audience \
                     (the issuer the pages sign in at, and its keys)"
                );
            }
            let public = self.public_url.as_deref().unwrap_or("");
            let loopback = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
                .iter()
                .any(|p| {
                    public
                        .strip_prefix(p)
                        .is_some_and(|r| r.is_empty() || r.starts_with([':', '/']))
                });
            if !(public.starts_with("https://") || loopback) || public.contains(['?', '#']) {
                bail!(
                    "invalid configuration: oidc_client_id needs public_url, the https:// address \
                     browsers reach this service at (http:// only for localhost)"
                );
            }
        }
        for c in list(&self.trusted_proxies) {
            if let Err(e) = c.parse::<api::limits::Cidr>() {
                bail!("invalid configuration: trusted_proxies: {e}");
            }
        }
        if !(1..=256).contains(&self.hash_concurrency) {
            bail!("invalid configuration: hash_concurrency must be from 1 to 256");
        }
        if self.collector_clock_skew_secs > 3600 {
            bail!("invalid configuration: collector_clock_skew_secs must be from 0 to 3600");
        }
        if !(1..=100_000).contains(&self.consumer_batch) {
            bail!("invalid configuration: consumer_batch must be from 1 to 100000");
        }
        if !(1..=3600).contains(&self.lease_failover_secs) {
            bail!("invalid configuration: lease_failover_secs must be from 1 to 3600");
        }
        if !(1..=500).contains(&self.kinesis_shards) {
            bail!("invalid configuration: kinesis_shards must be from 1 to 500");
        }
        if !(1..=3600).contains(&self.shard_sync_secs) {
            bail!("invalid configuration: shard_sync_secs must be from 1 to 3600");
        }
        let name_ok = |n: &str| {
            (1..=128).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if !name_ok(&self.kinesis_stream) {
            bail!(
                "invalid configuration: kinesis_stream must be 1 to 128 letters, digits, '_', '-' or '.'"
            );
        }
        if !name_ok(&self.kafka_topic) || !name_ok(&self.kafka_group) {
            bail!(
                "invalid configuration: kafka_topic and kafka_group must be 1 to 128 letters, digits, '_', '-' or '.'"
            );
        }
        if self.kafka_brokers.trim().is_empty() {
            bail!("invalid configuration: kafka_brokers must name at least one host:port");
        }
        if !(1..=1000).contains(&self.kafka_partitions) {
            bail!("invalid configuration: kafka_partitions must be from 1 to 1000");
        }
        if !(1000..=300_000).contains(&self.kafka_session_timeout_ms) {
            bail!("invalid configuration: kafka_session_timeout_ms must be from 1000 to 300000");
        }
        if !(1..=64).contains(&self.log_partitions) {
            bail!("invalid configuration: log_partitions must be from 1 to 64");
        }
        if !(0.0..=1.0).contains(&self.otel_sampling_ratio) {
            bail!("invalid configuration: otel_sampling_ratio must be from 0 to 1");
        }
        if !(1..=3600).contains(&self.shutdown_grace_secs) {
            bail!("invalid configuration: shutdown_grace_secs must be from 1 to 3600");
        }
        if !(100..=60_000).contains(&self.webhook_timeout_ms) {
            bail!("invalid configuration: webhook_timeout_ms must be from 100 to 60000");
        }
        if self.supplier_notifier == SupplierNotifierKind::Sns
            && self.supplier_sns_topic_arn.is_none()
        {
            bail!(
                "invalid configuration: supplier_notifier = \"sns\" needs supplier_sns_topic_arn"
            );
        }
        if self.supplier_notifier == SupplierNotifierKind::Ses && self.ses_from.is_none() {
            bail!(
                "invalid configuration: supplier_notifier = \"ses\" needs ses_from, the sender address"
            );
        }
        if self.recommender_history_hours < 1 {
            bail!("invalid configuration: recommender_history_hours must be at least 1");
        }
        Ok(())
    }

    /// Who this process is in the lease table. Embedded: one id kept in the
    /// data directory, since only one process can own it — so after a crash
    /// the next start takes its leases back at once. AWS: unique per process.
    pub fn instance_id(&self) -> anyhow::Result<String> {
        let random = || format!("{}-{}", std::process::id(), uuid_like());
        if self.backend == Backend::Aws {
            return Ok(random());
        }
        let path = self.data_dir.join("instance_id");
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            _ => {
                let id = format!("embedded-{}", uuid_like());
                std::fs::create_dir_all(&self.data_dir)?;
                std::fs::write(&path, &id)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(id)
            }
        }
    }

    /// The token signing key: configured, or (embedded mode) made once and
    /// kept in the data directory with owner-only permissions.
    pub fn jwt_secret(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(s) = &self.jwt_secret {
            return Ok(s.expose_secret().as_bytes().to_vec());
        }
        let path = self.data_dir.join("jwt_secret");
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
            Ok(_) => bail!(
                "{} is shorter than 32 characters; delete it to make a new one",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        use rand::distr::{Alphanumeric, SampleString};
        let secret = Alphanumeric.sample_string(&mut rand::rng(), 64);
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data_dir {}", self.data_dir.display()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        use std::io::Write;
        options
            .open(&path)
            .and_then(|mut f| f.write_all(secret.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(secret.into_bytes())
    }
}

impl From<InitialPosition> for ingest::kinesis::InitialPosition {
    fn from(p: InitialPosition) -> Self {
        match p {
            InitialPosition::TrimHorizon => Self::TrimHorizon,
            InitialPosition::Latest => Self::Latest,
        }
    }
}

/// A comma-separated list, trimmed, without empty entries.
fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn uuid_like() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric
        .sample_string(&mut rand::rng(), 12)
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_range_value_names_its_setting() {
        for (setting, apply) in [
            (
                "ws_ping_secs",
                (|s: &mut Settings| s.ws_ping_secs = 0) as fn(&mut Settings),
            ),
            ("reservation_sweep_secs", |s| s.reservation_sweep_secs = 0),
            ("ws_queue", |s| s.ws_queue = 0),
            ("ws_tick_ms", |s| s.ws_tick_ms = 0),
            ("recommend_per_category", |s| s.recommend_per_category = 0),
            ("recommender_history_hours", |s| {
                s.recommender_history_hours = 0
            }),
            ("max_quantity", |s| s.max_quantity = -1),
        ] {
            let mut settings = Settings::default();
            assert!(settings.validate().is_ok(), "the defaults are valid");
            apply(&mut settings);
            let error = settings.validate().expect_err(setting).to_string();
            assert!(error.contains(setting), "{setting}: {error}");
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let settings = Settings {
            jwt_secret: Some("a-signing-key-that-is-long-enough-0123".into()),
            admin_password: Some("correct horse battery staple".into()),
            oidc_client_secret: Some("the-app-clients-secret".into()),
            ..Settings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("signing-key"), "{shown}");
        assert!(!shown.contains("horse"), "{shown}");
        assert!(!shown.contains("clients-secret"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert_eq!(
            settings.jwt_secret().unwrap(),
            b"a-signing-key-that-is-long-enough-0123"
        );
    }

    #[test]
    fn the_pages_sign_in_needs_the_issuer_and_the_public_address() {
        let with = |public: Option<&str>, jwks: bool| Settings {
            oidc_client_id: Some("app-client".into()),
            public_url: public.map(str::to_owned),
            jwks_url: jwks.then(|| "https://issuer.example/.well-known/jwks.json".into()),
            jwks_issuer: Some("https://issuer.example/pool/".into()),
            jwks_audience: Some("app-client".into()),
            ..Settings::default()
        };
        for (public, jwks, ok) in [
            (Some("https://shop.example"), true, true),
            (Some("http://localhost:8080"), true, true),
            (Some("http://127.0.0.1"), true, true),
            (Some("https://shop.example"), false, false),
            (None, true, false),
            (Some("http://shop.example"), true, false),
            (Some("http://localhost.evil.example"), true, false),
            (Some("https://shop.example/#x"), true, false),
        ] {
            assert_eq!(
                with(public, jwks).validate().is_ok(),
                ok,
                "{public:?} {jwks}"
            );
        }
        let o = with(Some("https://shop.example/"), true).oidc().unwrap();
        assert_eq!(
            o.discovery_url,
            "https://issuer.example/pool/.well-known/openid-configuration"
        );
        assert_eq!(
            o.redirect_url,
            "https://shop.example/api/auth/oidc/callback"
        );
        assert!(Settings::default().oidc().is_none());
    }

    #[test]
    fn lists_drop_blanks() {
        assert_eq!(list(" a, ,b ,"), ["a", "b"]);
        assert!(list("").is_empty());
    }
}
