//! Checkout: reserve every line in one conditional transaction, pay with the
//! order id as the idempotency key, settle.

use std::time::Duration;

use domain::{Currency, Price, ProductId};
use processors::state::stock_key;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use storage::{Cond, Key, StoreError, Table, TxOp, Update, from_item, to_item};
use time::OffsetDateTime;

use crate::{
    ChangeError, CheckoutError, CheckoutRequest, Customer, Shop, Shortage, basket,
    keys::{
        all_key, idem_key, line_total, now_ms, order_key, owner_key, reservation_key, status_key,
    },
    order::{By, Order, OrderLine, PaymentInfo, Status, StatusChange},
    orders::Transition,
    outbox,
    outbox::Work,
    payment::{Charge, ChargeOutcome},
};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IdemRecord {
    order_id: String,
    request_hash: String,
}

impl Shop {
    /// Checks out the customer's basket: reserves, pays, confirms. Retrying
    /// with the same key and request returns the same order.
    pub async fn checkout(
        &self,
        customer: &Customer,
        idempotency_key: &str,
        request: &CheckoutRequest,
        request_hash: &str,
    ) -> Result<Order, CheckoutError> {
        let idem = idem_key(&customer.user_id, idempotency_key);
        for attempt in 0..12u32 {
            if let Some(item) = self.store.get(Table::Orders, &idem).await? {
                let rec: IdemRecord = from_item(item)?;
                if rec.request_hash != request_hash {
                    return Err(CheckoutError::KeyReused);
                }
                let order = self
                    .order(&rec.order_id)
                    .await?
                    .ok_or(CheckoutError::Store(StoreError::Corrupt(format!(
                        "idempotency key names missing order {}",
                        rec.order_id
                    ))))?;
                return Ok(self.settle(order, request).await?);
            }
            match self.reserve(customer, &idem, request, request_hash).await {
                Ok(order) => return Ok(self.settle(order, request).await?),
                // The key was taken meanwhile by a concurrent retry: read it.
                Err(Reserve::KeyTaken) => continue,
                Err(Reserve::Retry) => {
                    let jitter = rand_ms(attempt);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    continue;
                }
                Err(Reserve::Failed(e)) => return Err(e),
            }
        }
        Err(CheckoutError::Busy)
    }

    async fn reserve(
        &self,
        customer: &Customer,
        idem: &Key,
        request: &CheckoutRequest,
        request_hash: &str,
    ) -> Result<Order, Reserve> {
        let now = OffsetDateTime::now_utc();
        let b = basket::load(
            self.store.as_ref(),
            &owner_of(customer),
            self.idle_ms(),
            now_ms(),
        )
        .await
        .map_err(|e| Reserve::Failed(e.into()))?;
        if b.lines.is_empty() {
            return Err(Reserve::Failed(CheckoutError::EmptyBasket));
        }
        let mut lines = Vec::new();
        let mut unknown = Vec::new();
        let mut currency: Option<Currency> = None;
        let mut total = Decimal::ZERO;
        for l in &b.lines {
            let product = match l.product_id.parse::<ProductId>() {
                Ok(id) => self
                    .products
                    .get(id)
                    .await
                    .map_err(|e| Reserve::Failed(e.into()))?,
                Err(_) => None,
            };
            let Some(p) = product else {
                unknown.push(l.product_id.clone());
                continue;
            };
            if *currency.get_or_insert(p.currency) != p.currency {
                return Err(Reserve::Failed(CheckoutError::MixedCurrencies));
            }
            let lt = line_total(p.price, l.quantity);
            total += lt.amount();
            lines.push(OrderLine {
                product_id: l.product_id.clone(),
                name: p.name,
                quantity: l.quantity,
                unit_price: p.price,
                line_total: lt,
            });
        }
        if !unknown.is_empty() {
            return Err(Reserve::Failed(CheckoutError::UnknownProducts(unknown)));
        }
        let reserved_until = now + self.config.reservation_ttl;
        let order = Order {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: customer.user_id.clone(),
            email: customer.email.clone(),
            status: Status::PendingPayment,
            total: Price::from_decimal(total).map_err(|e| {
                Reserve::Failed(CheckoutError::Store(StoreError::Invalid(e.into())))
            })?,
            currency: currency.expect("a non-empty basket has a currency"),
            lines,
            created_at: now,
            reserved_until: Some(reserved_until),
            payment: Some(PaymentInfo {
                provider: self.payments.name().to_owned(),
                card_last4: last4(&request.card_number),
                outcome: "pending".into(),
                reference: None,
                message: None,
            }),
            shipment: None,
            history: vec![StatusChange {
                status: Status::PendingPayment,
                at: now,
                actor: format!("user:{}", customer.user_id),
                note: None,
            }],
            recommendation_id: request.recommendation_id.clone(),
            version: 1,
        };
        let sk = order.listing_sk();
        let summary = order.summary();
        let store_err = |e: StoreError| Reserve::Failed(e.into());
        let mut ops: Vec<TxOp> = order
            .lines
            .iter()
            .map(|l| TxOp::Update {
                table: Table::Inventory,
                key: stock_key(&l.product_id),
                updates: vec![
                    Update::add("reserved", l.quantity),
                    Update::add("available", -l.quantity),
                    Update::add("version", 1),
                ],
                cond: Some(Cond::ge("available", l.quantity)),
            })
            .collect();
        let idem_index = ops.len();
        ops.push(TxOp::Put {
            table: Table::Orders,
            item: to_item(
                idem,
                &IdemRecord {
                    order_id: order.id.clone(),
                    request_hash: request_hash.to_owned(),
                },
            )
            .map_err(store_err)?,
            cond: Some(Cond::NotExists),
        });
        ops.push(TxOp::Put {
            table: Table::Orders,
            item: to_item(&order_key(&order.id), &order).map_err(store_err)?,
            cond: Some(Cond::NotExists),
        });
        for key in [
            owner_key(&order.user_id, &sk),
            status_key(order.status, &sk),
            all_key(&sk),
        ] {
            ops.push(TxOp::Put {
                table: Table::Orders,
                item: to_item(&key, &summary).map_err(store_err)?,
                cond: None,
            });
        }
        ops.push(TxOp::Put {
            table: Table::Orders,
            item: reservation_key(reserved_until, &order.id).to_item(),
            cond: None,
        });
        match self.store.transact(ops).await {
            Ok(()) => {
                metrics::counter!("shopstream_checkout_reservations_total").increment(1);
                self.stock_changed(order.lines.iter().map(|l| l.product_id.as_str()))
                    .await;
                Ok(order)
            }
            Err(StoreError::TransactionCanceled { failed }) => {
                if failed.contains(&idem_index) {
                    return Err(Reserve::KeyTaken);
                }
                let mut short = Vec::new();
                for &i in failed.iter().filter(|&&i| i < idem_index) {
                    let l = &order.lines[i];
                    let s = self.stock(&l.product_id).await.map_err(store_err)?;
                    if s.available < l.quantity {
                        short.push(Shortage {
                            product_id: l.product_id.clone(),
                            requested: l.quantity,
                            available: s.available.max(0),
                        });
                    }
                }
                if short.is_empty() {
                    // The stock moved back meanwhile: try again.
                    Err(Reserve::Retry)
                } else {
                    metrics::counter!("shopstream_checkout_out_of_stock_total").increment(1);
                    Err(Reserve::Failed(CheckoutError::OutOfStock(short)))
                }
            }
            Err(StoreError::Conflict(_)) => Err(Reserve::Retry),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Pays a `pending_payment` order and records the outcome; any other
    /// order is returned as it is.
    async fn settle(&self, order: Order, request: &CheckoutRequest) -> Result<Order, StoreError> {
        if order.status != Status::PendingPayment {
            return Ok(order);
        }
        let charge = Charge {
            order_id: order.id.clone(),
            amount: order.total,
            currency: order.currency,
            card_number: request.card_number.clone(),
        };
        let started = std::time::Instant::now();
        let answer =
            tokio::time::timeout(self.config.payment_timeout, self.payments.charge(&charge)).await;
        metrics::histogram!("shopstream_payment_seconds").record(started.elapsed().as_secs_f64());
        let mut info = order.payment.clone().unwrap_or(PaymentInfo {
            provider: self.payments.name().to_owned(),
            card_last4: last4(&request.card_number),
            outcome: String::new(),
            reference: None,
            message: None,
        });
        let (to, note, mut extra) = match answer {
            Ok(Ok(ChargeOutcome::Approved { reference })) => {
                info.outcome = "approved".into();
                info.reference = Some(reference);
                (Status::Paid, None, Vec::new())
            }
            Ok(Ok(ChargeOutcome::Declined { reason })) => {
                info.outcome = "declined".into();
                info.message = Some(reason.clone());
                (
                    Status::PaymentFailed,
                    Some(format!("card declined: {reason}")),
                    Vec::new(),
                )
            }
            Ok(Err(e)) => {
                info.outcome = "processor_error".into();
                info.message = Some(e.to_string());
                (Status::PaymentFailed, Some(e.to_string()), Vec::new())
            }
            Err(_) => {
                info.outcome = "timeout".into();
                let msg = format!(
                    "the payment processor did not answer within {} ms",
                    self.config.payment_timeout.as_millis()
                );
                info.message = Some(msg.clone());
                // The charge may still land: void it.
                (
                    Status::PaymentFailed,
                    Some(msg),
                    vec![outbox::put(Work::Refund {
                        order_id: order.id.clone(),
                    })?],
                )
            }
        };
        metrics::counter!("shopstream_checkout_payments_total", "outcome" => info.outcome.clone())
            .increment(1);
        if to == Status::Paid {
            extra.push(TxOp::Delete {
                table: Table::Baskets,
                key: basket::basket_key(&format!("user:{}", order.user_id)),
                cond: None,
            });
        }
        let id = order.id.clone();
        let approved = to == Status::Paid;
        match self
            .apply(
                order,
                Transition {
                    note,
                    payment: Some(info),
                    extra,
                    ..Transition::new(to, By::System, "system")
                },
            )
            .await
        {
            Ok(o) => Ok(o),
            Err(ChangeError::Store(e)) => Err(e),
            Err(_) => {
                // Someone else settled or cancelled it first (a concurrent
                // retry, the sweeper, the customer). If it was cancelled and
                // we were approved, the charge must not stand.
                let now = self
                    .order(&id)
                    .await?
                    .ok_or(StoreError::Corrupt(format!("order {id} vanished")))?;
                if approved && matches!(now.status, Status::Cancelled | Status::PaymentFailed) {
                    self.store
                        .transact(vec![outbox::put(Work::Refund {
                            order_id: id.clone(),
                        })?])
                        .await?;
                    self.outbox_wake.notify_one();
                }
                Ok(now)
            }
        }
    }
}

pub(crate) enum Reserve {
    KeyTaken,
    Retry,
    Failed(CheckoutError),
}

pub(crate) fn owner_of(c: &Customer) -> String {
    format!("user:{}", c.user_id)
}

pub(crate) fn last4(card: &str) -> String {
    let digits: Vec<char> = card.chars().filter(|c| c.is_ascii_digit()).collect();
    digits[digits.len().saturating_sub(4)..].iter().collect()
}

pub(crate) fn rand_ms(attempt: u32) -> u64 {
    let base = 5u64 << attempt.min(6);
    base + (uuid::Uuid::new_v4().as_u128() % base as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_four_digits_are_kept() {
        assert_eq!(last4("4242 4242 4242 4242"), "4242");
        assert_eq!(last4("4000-0000-0000-0002"), "0002");
        assert_eq!(last4("12"), "12");
        assert_eq!(last4(""), "");
    }

    #[test]
    fn retry_jitter_grows_and_is_bounded() {
        for attempt in 0..20 {
            let base = 5u64 << attempt.min(6);
            let ms = rand_ms(attempt);
            assert!((base..2 * base).contains(&ms), "{attempt}: {ms}");
        }
    }
}
