//! Low-stock alerts delivered to their supplier, by the outbox relay: a file
//! (embedded default), an SES e-mail to the supplier's contact address, an
//! SNS message with the attribute `supplier_id` (so each supplier's
//! subscription filters its own), or an HMAC-signed webhook.
//!
//! The pipeline writes one outbox entry in the transaction that raises the
//! alert, so one delivery is owed per crossing; the relay retries it with
//! backoff until it is done. Every delivery carries the alert id (the
//! webhook's `Shopstream-Delivery`, the SNS FIFO deduplication id, the file
//! name), so a receiver can drop the repeat a crash between a delivery and
//! its acknowledgement may cause.

use std::{path::PathBuf, time::Duration};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use processors::state::Alert;
use serde_json::json;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::{
    outbox::{NotifyError, SesNotifier, SnsNotifier},
    suppliers::Supplier,
};

/// Where supplier alerts go.
#[async_trait]
pub trait SupplierNotifier: Send + Sync + std::fmt::Debug + 'static {
    fn name(&self) -> &'static str;
    /// Delivers `alert` to `supplier` (`None`: no record for its
    /// `supplier_id`). `Ok` when delivered, or when it cannot ever be (no
    /// address to send to: logged and counted); `Err` to be retried.
    async fn deliver(&self, alert: &Alert, supplier: Option<&Supplier>) -> Result<(), NotifyError>;
}

/// The alert as JSON: what the webhook posts, SNS publishes and the file holds.
pub fn payload(alert: &Alert) -> serde_json::Value {
    json!({
        "type": "low_stock",
        "id": alert.id,
        "supplier_id": alert.supplier_id,
        "product_id": alert.product_id,
        "product_name": alert.product_name,
        "available": alert.available,
        "threshold": alert.threshold,
        "at": OffsetDateTime::from_unix_timestamp_nanos(i128::from(alert.at) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
    })
}

fn subject(alert: &Alert) -> String {
    format!(
        "Low stock: {} ({} left)",
        alert.product_name.as_deref().unwrap_or(&alert.product_id),
        alert.available
    )
}

fn body(alert: &Alert) -> String {
    format!(
        "Stock of {} (product {}) is down to {} available, below its threshold of {}.\n\
         Alert {}: acknowledge it in the supplier dashboard or with POST /api/supplier/alerts/{}/ack.",
        alert.product_name.as_deref().unwrap_or("a product"),
        alert.product_id,
        alert.available,
        alert.threshold,
        alert.id,
        alert.id
    )
}

fn undeliverable(alert: &Alert, notifier: &'static str, why: &'static str) {
    metrics::counter!("shopstream_supplier_alerts_undeliverable_total", "notifier" => notifier, "why" => why)
        .increment(1);
    tracing::warn!(supplier_id = %alert.supplier_id, alert = %alert.id, notifier, why, "supplier alert not delivered");
}

fn delivered(alert: &Alert, notifier: &'static str) {
    metrics::counter!("shopstream_supplier_alerts_delivered_total", "notifier" => notifier)
        .increment(1);
    tracing::info!(supplier_id = %alert.supplier_id, alert = %alert.id, notifier, "supplier alert delivered");
}

/// Writes `{dir}/alert-{id}.json` (whole, then renamed into place).
#[derive(Debug)]
pub struct FileAlerts {
    pub dir: PathBuf,
}

#[async_trait]
impl SupplierNotifier for FileAlerts {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn deliver(&self, alert: &Alert, _: Option<&Supplier>) -> Result<(), NotifyError> {
        let name = format!("alert-{}", alert.id);
        crate::outbox::write_file(
            &self.dir,
            &name,
            &serde_json::to_vec_pretty(&payload(alert))?,
        )
        .await?;
        delivered(alert, self.name());
        Ok(())
    }
}

/// An e-mail to the supplier's `contact_email`.
#[async_trait]
impl SupplierNotifier for SesNotifier {
    fn name(&self) -> &'static str {
        "ses"
    }

    async fn deliver(&self, alert: &Alert, supplier: Option<&Supplier>) -> Result<(), NotifyError> {
        let Some(to) = supplier.and_then(|s| s.contact_email.as_deref()) else {
            undeliverable(alert, "ses", "no contact_email");
            return Ok(());
        };
        self.send(to, &subject(alert), &body(alert)).await?;
        delivered(alert, "ses");
        Ok(())
    }
}

/// A message on the supplier-alerts topic with the attributes
/// `supplier_id`, `product_id` and `kind` (`low_stock`); on a FIFO topic the
/// alert id deduplicates and the supplier is the message group.
#[async_trait]
impl SupplierNotifier for SnsNotifier {
    fn name(&self) -> &'static str {
        "sns"
    }

    async fn deliver(&self, alert: &Alert, _: Option<&Supplier>) -> Result<(), NotifyError> {
        self.publish(
            &payload(alert).to_string(),
            &subject(alert),
            &[
                ("kind", "low_stock"),
                ("supplier_id", &alert.supplier_id),
                ("product_id", &alert.product_id),
            ],
            (&alert.supplier_id, &alert.id),
        )
        .await?;
        delivered(alert, "sns");
        Ok(())
    }
}

/// POSTs the alert as JSON to the supplier's `webhook_url`, signed:
/// `Shopstream-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`
/// with `Shopstream-Timestamp` (Unix seconds) and `Shopstream-Delivery`
/// (the alert id, the same on every retry). Any 2xx is delivered; anything
/// else, or no answer within the timeout, is retried by the relay.
#[derive(Debug)]
pub struct WebhookAlerts {
    client: reqwest::Client,
    /// Re-checked at delivery: a URL stored before a setting changed.
    allow_http: bool,
}

impl WebhookAlerts {
    pub fn new(timeout: Duration, allow_http: bool) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                // A webhook answers itself; a redirect could point anywhere.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("shopstream/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("a reqwest client with rustls"),
            allow_http,
        }
    }
}

/// `v1=` and the hex HMAC-SHA256 of `{timestamp}.{body}` under `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl SupplierNotifier for WebhookAlerts {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, alert: &Alert, supplier: Option<&Supplier>) -> Result<(), NotifyError> {
        let Some((supplier, url)) = supplier.and_then(|s| Some((s, s.webhook_url.as_deref()?)))
        else {
            undeliverable(alert, "webhook", "no webhook_url");
            return Ok(());
        };
        if let Err(why) = crate::suppliers::check_webhook_url(url, self.allow_http) {
            return Err(NotifyError::Service {
                service: "webhook",
                detail: format!("webhook_url {why}"),
            });
        }
        let body = serde_json::to_vec(&payload(alert))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let answer = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("shopstream-delivery", &alert.id)
            .header("shopstream-timestamp", now.to_string())
            .header(
                "shopstream-signature",
                signature(&supplier.webhook_secret, now, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| NotifyError::Service {
                service: "webhook",
                detail: e.without_url().to_string(),
            })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(NotifyError::Service {
                service: "webhook",
                detail: format!("answered {status}"),
            });
        }
        delivered(alert, "webhook");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, br#"{"a":1}"#),
            "v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
