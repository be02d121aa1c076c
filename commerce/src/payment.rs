//! Payment: the [`PaymentProvider`] port and the simulated card processor
//! that the default mode uses.
//!
//! # The simulated processor's test cards
//!
//! | number | what happens |
//! |---|---|
//! | `4242 4242 4242 4242` | approved |
//! | `4000 0000 0000 0002` | declined (`card_declined`) |
//! | `4000 0000 0000 0119` | processor error (nothing is charged; retrying errors again) |
//! | `4000 0000 0000 0259` | slow: answers after [`SimulatedProcessor::slow`], then approves |
//!
//! Any other number that passes the Luhn check is approved; one that does
//! not is refused before the processor is called.
//!
//! Charges are idempotent on the order id: a charge for an order that was
//! already charged returns the first answer and charges nothing. The ledger
//! lives in the store (`meta` / `payment#sim`), so this holds across
//! restarts and between instances.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use domain::{Currency, Price};
use serde::{Deserialize, Serialize};
use storage::{Cond, Key, Store, StoreError, Table, Update, from_item, to_item};

/// One charge. `order_id` is the idempotency key: the provider must charge
/// at most once per order id.
#[derive(Clone, Debug)]
pub struct Charge {
    pub order_id: String,
    pub amount: Price,
    pub currency: Currency,
    pub card_number: String,
}

/// What the processor answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChargeOutcome {
    Approved { reference: String },
    Declined { reason: String },
}

/// The processor could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment processor failed: {0}")]
    Processor(String),
}

/// A card processor.
#[async_trait]
pub trait PaymentProvider: Send + Sync + std::fmt::Debug + 'static {
    fn name(&self) -> &'static str;

    /// Charges the card once per order id (a repeat returns the first answer).
    async fn charge(&self, charge: &Charge) -> Result<ChargeOutcome, PaymentError>;

    /// Refunds the order's charge, or voids it so that it can no longer be
    /// captured. Idempotent; refunding an order never charged does nothing.
    async fn refund(&self, order_id: &str) -> Result<(), PaymentError>;
}

/// Whether a card number passes the Luhn check (13 to 19 digits).
pub fn luhn_valid(number: &str) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 13 || digits.len() > 19 || number.chars().any(|c| !c.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

pub const CARD_APPROVE: &str = "4242424242424242";
pub const CARD_DECLINE: &str = "4000000000000002";
pub const CARD_ERROR: &str = "4000000000000119";
pub const CARD_SLOW: &str = "4000000000000259";

/// The built-in card processor of the default mode. See the module docs.
#[derive(Debug)]
pub struct SimulatedProcessor {
    store: Arc<dyn Store>,
    /// How long the slow test card takes to answer.
    pub slow: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct LedgerEntry {
    #[serde(flatten)]
    outcome: ChargeOutcome,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    refunded: bool,
}

fn ledger_key(order_id: &str) -> Key {
    Key::new("payment#sim", order_id)
}

impl SimulatedProcessor {
    pub fn new(store: Arc<dyn Store>, slow: Duration) -> Self {
        Self { store, slow }
    }

    async fn record(
        &self,
        charge: &Charge,
        outcome: ChargeOutcome,
    ) -> Result<ChargeOutcome, PaymentError> {
        let key = ledger_key(&charge.order_id);
        let entry = LedgerEntry {
            outcome: outcome.clone(),
            amount: charge.amount.to_string(),
            currency: charge.currency.as_str().to_owned(),
            refunded: false,
        };
        let item = to_item(&key, &entry).map_err(store_err)?;
        match self
            .store
            .put(Table::Meta, item, Some(Cond::NotExists))
            .await
        {
            Ok(()) => {
                let o = match outcome {
                    ChargeOutcome::Approved { .. } => "approved",
                    ChargeOutcome::Declined { .. } => "declined",
                };
                metrics::counter!("shopstream_payments_charged_total", "provider" => self.name(), "outcome" => o)
                    .increment(1);
                Ok(outcome)
            }
            // Someone charged this order first (a concurrent retry, or a
            // void): their answer stands.
            Err(StoreError::ConditionFailed) => self
                .recorded(&charge.order_id)
                .await?
                .ok_or_else(|| PaymentError::Processor("ledger entry vanished".into())),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn recorded(&self, order_id: &str) -> Result<Option<ChargeOutcome>, PaymentError> {
        let item = self
            .store
            .get(Table::Meta, &ledger_key(order_id))
            .await
            .map_err(store_err)?;
        Ok(match item {
            Some(item) => {
                let e: LedgerEntry = from_item(item).map_err(store_err)?;
                Some(if e.refunded {
                    ChargeOutcome::Declined {
                        reason: "voided".into(),
                    }
                } else {
                    e.outcome
                })
            }
            None => None,
        })
    }
}

fn store_err(e: StoreError) -> PaymentError {
    PaymentError::Processor(format!("processor ledger: {e}"))
}

#[async_trait]
impl PaymentProvider for SimulatedProcessor {
    fn name(&self) -> &'static str {
        "simulated"
    }

    #[tracing::instrument(name = "payment.charge", skip_all, fields(order_id = %charge.order_id), err(level = "debug"))]
    async fn charge(&self, charge: &Charge) -> Result<ChargeOutcome, PaymentError> {
        if let Some(done) = self.recorded(&charge.order_id).await? {
            return Ok(done);
        }
        match charge.card_number.as_str() {
            CARD_DECLINE => {
                self.record(
                    charge,
                    ChargeOutcome::Declined {
                        reason: "card_declined".into(),
                    },
                )
                .await
            }
            CARD_ERROR => Err(PaymentError::Processor(
                "simulated processor error (test card 4000 0000 0000 0119)".into(),
            )),
            n => {
                if n == CARD_SLOW {
                    tokio::time::sleep(self.slow).await;
                }
                let reference = format!("sim_{}", uuid::Uuid::new_v4().simple());
                self.record(charge, ChargeOutcome::Approved { reference })
                    .await
            }
        }
    }

    #[tracing::instrument(name = "payment.refund", skip(self), err(level = "debug"))]
    async fn refund(&self, order_id: &str) -> Result<(), PaymentError> {
        let key = ledger_key(order_id);
        // Marks the charge refunded; with no charge yet, writes a void so a
        // late charge for this order cannot go through.
        self.store
            .update(
                Table::Meta,
                &key,
                vec![
                    Update::set("refunded", true),
                    Update::set("outcome", "declined"),
                    Update::set("reason", "voided"),
                ],
                None,
            )
            .await
            .map_err(store_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_the_test_cards_and_refuses_typos() {
        for c in [CARD_APPROVE, CARD_DECLINE, CARD_ERROR, CARD_SLOW] {
            assert!(luhn_valid(c), "{c}");
        }
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("4242 4242 4242 4242"));
        assert!(!luhn_valid("42"));
        assert!(!luhn_valid(""));
    }
}
