//! The outbox: work that must follow a commit — events to publish,
//! notifications to send, refunds — written in the same transaction as the
//! state change it follows, then carried out by [`Relay`] with retries.
//!
//! Delivery is at least once; the notifiers make it idempotent where they
//! can (the file notifier names each file after the notification id, so a
//! repeat rewrites the same file).

use domain::clock::now_ms;
use std::{path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use ingest::EventSink;
use storage::{Cond, Key, Query, Store, StoreError, Table, Update, from_item};
use tokio::sync::Notify;

use crate::payment::PaymentProvider;

pub use processors::outbox::{Entry, Notification, PK, Work, put};

/// Why a notification was not delivered (the relay retries it).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the notification: {0}")]
    Encode(#[from] serde_json::Error),
    /// The e-mail or messaging service refused or failed the call.
    #[error("{service}: {detail}")]
    Service {
        service: &'static str,
        detail: String,
    },
}

impl NotifyError {
    fn service(service: &'static str) -> impl FnOnce(String) -> Self {
        move |detail| Self::Service { service, detail }
    }
}

/// Why a piece of outbox work did not get done (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("publishing: {0}")]
    Publish(#[from] ingest::PublishError),
    #[error("notifying: {0}")]
    Notify(#[from] NotifyError),
    #[error("refunding: {0}")]
    Refund(#[from] crate::payment::PaymentError),
}

/// Where notifications go.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug + 'static {
    fn name(&self) -> &'static str;
    async fn deliver(&self, n: &Notification) -> Result<(), NotifyError>;
}

/// Writes each notification as `{dir}/{id}.json` (written whole, then
/// renamed into place) and logs a line: the embedded mode's mail room.
#[derive(Debug)]
pub struct FileNotifier {
    pub dir: PathBuf,
}

#[async_trait]
impl Notifier for FileNotifier {
    fn name(&self) -> &'static str {
        "file"
    }

    #[tracing::instrument(name = "notify.deliver", skip_all, fields(notifier = self.name(), order_id = %n.order_id, kind = %n.kind), err(level = "debug"))]
    async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
        let path = write_file(&self.dir, &n.id, &serde_json::to_vec_pretty(n)?).await?;
        tracing::info!(order_id = %n.order_id, kind = %n.kind, to = ?n.to, subject = %n.subject, file = %path.display(), "notification delivered");
        Ok(())
    }
}

/// Writes `{dir}/{name}.json` whole, then renames it into place (a repeat
/// rewrites the same file); returns its path.
pub(crate) async fn write_file(
    dir: &std::path::Path,
    name: &str,
    body: &[u8],
) -> Result<PathBuf, NotifyError> {
    let file = |what, path: &std::path::Path| {
        let path = path.to_owned();
        move |source| NotifyError::File { what, path, source }
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(file("create", dir))?;
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, body)
        .await
        .map_err(file("write", &tmp))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(file("rename to", &path))?;
    Ok(path)
}

/// Carries out the outbox: claims an entry (so that two instances do not
/// both take it), does it, deletes it; on failure retries with backoff.
#[derive(Clone, Debug)]
pub struct Relay {
    pub store: Arc<dyn Store>,
    pub events: Arc<dyn EventSink>,
    pub notifier: Arc<dyn Notifier>,
    pub payments: Arc<dyn PaymentProvider>,
    /// Where supplier alerts go, and whom to.
    pub alerts: Arc<dyn crate::alerts::SupplierNotifier>,
    pub suppliers: crate::suppliers::Suppliers,
    /// Woken after a commit that wrote to the outbox.
    pub wake: Arc<Notify>,
}

/// How long a claimed entry is left to its claimant before another relay
/// may take it.
const CLAIM_MS: i64 = 30_000;

impl Relay {
    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.drain().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox relay: store error; retrying"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Does every due entry once; returns how many were done.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut done = 0;
        let mut query = Query {
            limit: 100,
            ..Query::default()
        };
        // Entries waiting out a backoff stay at the front: read past them,
        // a bounded number of pages a round.
        for _ in 0..10 {
            let page = self.store.query(Table::Outbox, PK, &query).await?;
            done += self.perform_page(page.items).await?;
            match page.cursor {
                Some(c) if done < 100 => query.cursor = Some(c),
                _ => break,
            }
        }
        Ok(done)
    }

    async fn perform_page(&self, items: Vec<storage::Item>) -> Result<usize, StoreError> {
        let mut done = 0;
        let now = now_ms();
        for item in items {
            let key = Key::of(&item)?;
            let entry: Entry = match from_item(item) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, sk = %key.sk, "outbox entry unreadable; left in place");
                    continue;
                }
            };
            if entry.not_before > now {
                continue;
            }
            // Claim it: only one relay gets past this.
            let claimed = self
                .store
                .update(
                    Table::Outbox,
                    &key,
                    vec![Update::set("not_before", now + CLAIM_MS)],
                    Some(Cond::And(vec![
                        Cond::Exists,
                        Cond::eq("not_before", entry.not_before),
                    ])),
                )
                .await;
            match claimed {
                Ok(_) => {}
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e),
            }
            match self.perform(&entry.work).await {
                Ok(()) => {
                    self.store.delete(Table::Outbox, &key, None).await?;
                    metrics::counter!("shopstream_outbox_done_total", "work" => work_name(&entry.work)).increment(1);
                    done += 1;
                }
                Err(e) => {
                    let attempts = entry.attempts + 1;
                    let backoff = 500i64 * 2i64.pow(attempts.min(10));
                    tracing::warn!(error = %e, attempts, work = work_name(&entry.work), "outbox work failed; will retry");
                    metrics::counter!("shopstream_outbox_failures_total", "work" => work_name(&entry.work)).increment(1);
                    self.store
                        .update(
                            Table::Outbox,
                            &key,
                            vec![
                                Update::set("attempts", attempts as i64),
                                Update::set("not_before", now_ms() + backoff.min(300_000)),
                            ],
                            Some(Cond::Exists),
                        )
                        .await?;
                }
            }
        }
        Ok(done)
    }

    async fn perform(&self, work: &Work) -> Result<(), WorkError> {
        match work {
            Work::Publish { event } => self.events.publish(std::slice::from_ref(event)).await?,
            Work::Notify { notification } => self.notifier.deliver(notification).await?,
            Work::Refund { order_id } => self.payments.refund(order_id).await?,
            Work::SupplierAlert { alert } => {
                let supplier = self.suppliers.get(&alert.supplier_id).await.map_err(|e| {
                    NotifyError::Service {
                        service: "store",
                        detail: e.to_string(),
                    }
                })?;
                self.alerts.deliver(alert, supplier.as_ref()).await?
            }
        }
        Ok(())
    }
}

fn work_name(w: &Work) -> &'static str {
    match w {
        Work::Publish { .. } => "publish",
        Work::Notify { .. } => "notify",
        Work::Refund { .. } => "refund",
        Work::SupplierAlert { .. } => "supplier_alert",
    }
}

/// Sends each notification as an e-mail through Amazon SES (API v2), from
/// `from` (an identity verified in SES). A notification without an address
/// is logged and counted as delivered.
#[derive(Debug)]
pub struct SesNotifier {
    client: aws_sdk_sesv2::Client,
    pub from: String,
}

impl SesNotifier {
    pub async fn from_env(from: String) -> Self {
        let config = aws_config::load_from_env().await;
        Self {
            client: aws_sdk_sesv2::Client::new(&config),
            from,
        }
    }
}

#[async_trait]
impl Notifier for SesNotifier {
    fn name(&self) -> &'static str {
        "ses"
    }

    #[tracing::instrument(name = "notify.deliver", skip_all, fields(notifier = self.name(), order_id = %n.order_id, kind = %n.kind), err(level = "debug"))]
    async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
        let Some(to) = &n.to else {
            tracing::info!(order_id = %n.order_id, kind = %n.kind, "notification without an address; not e-mailed");
            return Ok(());
        };
        self.send(to, &n.subject, &n.body).await?;
        tracing::info!(order_id = %n.order_id, kind = %n.kind, %to, "notification e-mailed");
        Ok(())
    }
}

impl SesNotifier {
    /// Sends one plain-text e-mail from `from`.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), NotifyError> {
        use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
        let content = |s: &str| {
            Content::builder()
                .data(s)
                .charset("UTF-8")
                .build()
                .map_err(|e| NotifyError::service("ses")(e.to_string()))
        };
        let message = Message::builder()
            .subject(content(subject)?)
            .body(Body::builder().text(content(body)?).build())
            .build();
        self.client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(to).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|e| {
                NotifyError::service("ses")(
                    aws_sdk_sesv2::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        Ok(())
    }
}

/// Publishes each notification to an Amazon SNS topic, for whatever is
/// subscribed (e-mail, SMS, a queue, a function). The message is the
/// notification as JSON; `Subject` is its subject (trimmed to SNS's 100
/// characters) and the attributes `kind` and `order_id` allow filter
/// policies. On a FIFO topic (`….fifo`) the notification id is the
/// deduplication id, so a redelivery is dropped by SNS; the order is the
/// message group.
#[derive(Debug)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    pub topic_arn: String,
}

impl SnsNotifier {
    pub async fn from_env(topic_arn: String) -> Self {
        let config = aws_config::load_from_env().await;
        Self {
            client: aws_sdk_sns::Client::new(&config),
            topic_arn,
        }
    }
}

/// SNS takes a subject of at most 100 printable ASCII characters, not
/// starting with a space.
fn sns_subject(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let trimmed = clean.trim();
    trimmed.chars().take(100).collect()
}

#[async_trait]
impl Notifier for SnsNotifier {
    fn name(&self) -> &'static str {
        "sns"
    }

    #[tracing::instrument(name = "notify.deliver", skip_all, fields(notifier = self.name(), order_id = %n.order_id, kind = %n.kind), err(level = "debug"))]
    async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
        self.publish(
            &serde_json::to_string(n)?,
            &n.subject,
            &[("kind", &n.kind), ("order_id", &n.order_id)],
            (&n.order_id, &n.id),
        )
        .await?;
        tracing::info!(order_id = %n.order_id, kind = %n.kind, topic = %self.topic_arn, "notification published to SNS");
        Ok(())
    }
}

impl SnsNotifier {
    /// Publishes `message` with `subject` (made to fit SNS) and string
    /// message attributes; on a FIFO topic `fifo` is (message group,
    /// deduplication id).
    pub async fn publish(
        &self,
        message: &str,
        subject: &str,
        attributes: &[(&str, &str)],
        fifo: (&str, &str),
    ) -> Result<(), NotifyError> {
        use aws_sdk_sns::types::MessageAttributeValue;
        let mut publish = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(message);
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*value)
                .build()
                .map_err(|e| NotifyError::service("sns")(e.to_string()))?;
            publish = publish.message_attributes(*name, value);
        }
        let subject = sns_subject(subject);
        if !subject.is_empty() {
            publish = publish.subject(subject);
        }
        if self.topic_arn.ends_with(".fifo") {
            publish = publish
                .message_group_id(fifo.0)
                .message_deduplication_id(fifo.1);
        }
        publish.send().await.map_err(|e| {
            NotifyError::service("sns")(aws_sdk_sns::error::DisplayErrorContext(e).to_string())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod sns_tests {
    #[test]
    fn subjects_fit_sns() {
        assert_eq!(super::sns_subject("  Order 1 paid  "), "Order 1 paid");
        assert_eq!(
            super::sns_subject("Bestellung über €5"),
            "Bestellung ?ber ?5"
        );
        assert_eq!(super::sns_subject(&"x".repeat(150)).len(), 100);
    }
}
