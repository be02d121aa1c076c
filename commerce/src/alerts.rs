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
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            // A webhook answers itself; a redirect could point anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("shopstream/", env!("CARGO_PKG_VERSION")));
        // The addresses a host name resolves to are checked where the
        // connection is made (so a name that resolved to a public address
        // when it was stored, or a moment ago, cannot reach the shop's own
        // network now). `webhook_allow_http` (tests, development) lifts it.
        let builder = if allow_http {
            builder
        } else {
            builder.dns_resolver(std::sync::Arc::new(PublicOnly))
        };
        Self {
            client: builder.build().expect("a reqwest client with rustls"),
            allow_http,
        }
    }
}

/// Resolves a webhook's host name to its public addresses only: loopback,
/// private, link-local (the cloud metadata endpoint, 169.254.169.254),
/// shared, documentation, multicast and reserved ranges are dropped, and a
/// name left with none is refused. OWASP's advice for server-side requests
/// to user-given URLs: check the address connected to, not the name.
#[derive(Debug)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address ({} refused: loopback, private, \
                     link-local or reserved)",
                    all.len()
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is an address on the public internet (a webhook may be
/// there), by the IANA special-purpose registries.
fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(a == 0                                    // "this network"
                || a == 10                              // private
                || a == 127                             // loopback
                || (a == 100 && (64..128).contains(&b)) // shared (carrier NAT)
                || (a == 169 && b == 254)               // link-local, cloud metadata
                || (a == 172 && (16..32).contains(&b))  // private
                || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
                || (a == 192 && b == 0 && c == 2)       // documentation
                || (a == 192 && b == 168)               // private
                || (a == 198 && (b == 18 || b == 19))   // benchmarking
                || (a == 198 && b == 51 && c == 100)    // documentation
                || (a == 203 && b == 0 && c == 113)     // documentation
                || a >= 224) // multicast, reserved, broadcast
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || (s[0] & 0xfe00) == 0xfc00                // unique local
                || (s[0] & 0xffc0) == 0xfe80                // link-local
                || (s[0] & 0xff00) == 0xff00                // multicast
                || (s[0] == 0x2001 && s[1] == 0x0db8)       // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b)       // NAT64 (an IPv4 address inside)
                || s[0] == 0x2002                           // 6to4 (an IPv4 address inside)
                || (s[0] == 0x2001 && s[1] == 0)            // Teredo
                || s[..6] == [0; 6]) // IPv4-compatible, deprecated
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
    fn only_public_addresses_are_public() {
        for private in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "203.0.114.1",
            "::ffff:8.8.8.8",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_not_connected_to() {
        // A receiver on loopback would answer 200 if it were reached.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        let hooks = WebhookAlerts::new(Duration::from_secs(10), false);
        let err = hooks
            .client
            .post(format!("https://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("no public address"), "{chain}");
        assert!(!accepted.is_finished(), "nothing connected to the receiver");
        accepted.abort();
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, br#"{"a":1}"#),
            "v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
