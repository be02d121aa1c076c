//! shopstream's commerce: baskets, oversell-proof checkout, payment, orders
//! and their state machine, and the outbox that follows every change.
//!
//! # Invariants
//! - Checkout reserves every line in **one conditional transaction**
//!   (`available >= quantity` on each product's stock item): all lines or
//!   none, so stock is never reserved below zero, on either backend, under
//!   any concurrency.
//! - Every status change is one transaction conditional on the order's
//!   version, holding the order, its summaries, its stock effect and its
//!   outbox entries (events, notifications, refunds) — so a crash between two
//!   steps never leaves a change half made.
//! - A reservation carries an expiry; [`Shop::sweep_reservations`] releases
//!   those whose payment never settled.
//! - The payment call carries the order id as its idempotency key, so a retry
//!   never charges twice.
//!
//! # Layout
//! - [`order`]: the order, its summaries and the state machine (pure).
//! - [`basket`]: the stored basket.
//! - [`payment`]: the payment port and the simulated card processor.
//! - [`outbox`]: the outbox, the notifiers and the relay.

pub mod basket;
pub mod order;
pub mod outbox;
pub mod payment;

use std::{sync::Arc, time::Duration};

use domain::{Actor, Currency, Event, EventPayload, Price, ProductId, event::PurchaseLine};
use processors::{
    Bus,
    changes::Change,
    pipeline::check_alert,
    state::{Stock, stock_key},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use storage::{
    Cond, Key, Query, SortRange, Store, StoreError, Table, TxOp, Update, from_item,
    products::Products, to_item,
};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::{
    basket::Basket,
    order::{
        By, Effect, Order, OrderLine, OrderSummary, PaymentInfo, Shipment, Status, StatusChange,
        TransitionError,
    },
    outbox::{Notification, Work},
    payment::{Charge, ChargeOutcome, PaymentProvider},
};

/// Limits and timings of the shop.
#[derive(Clone, Debug)]
pub struct ShopConfig {
    /// The most units of one product in a basket (and in an order line).
    pub max_quantity: i64,
    /// The most products in one basket.
    pub max_lines: usize,
    /// A basket left alone this long is gone.
    pub basket_idle: Duration,
    /// How long checkout holds stock for a payment to settle.
    pub reservation_ttl: Duration,
    /// How long the payment processor may take to answer.
    pub payment_timeout: Duration,
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            max_quantity: 99,
            max_lines: 50,
            basket_idle: Duration::from_secs(7 * 24 * 3600),
            reservation_ttl: Duration::from_secs(15 * 60),
            payment_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a basket change was refused.
#[derive(Debug, thiserror::Error)]
pub enum BasketError {
    #[error("quantity must be between 1 and {max}")]
    Quantity { max: i64 },
    #[error("no product {0} in the catalogue (unknown or deleted)")]
    UnknownProduct(String),
    #[error("product {0} is not in the basket")]
    NotInBasket(String),
    #[error("a basket holds at most {0} products")]
    TooManyLines(usize),
    #[error("the basket is in {basket}; product {product_id} is priced in {product}")]
    Currency {
        product_id: String,
        basket: String,
        product: String,
    },
    #[error("the basket kept changing; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A product that checkout could not cover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shortage {
    pub product_id: String,
    pub requested: i64,
    pub available: i64,
}

/// Why checkout did not make an order.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the basket is empty")]
    EmptyBasket,
    #[error("products no longer in the catalogue: {0:?}")]
    UnknownProducts(Vec<String>),
    #[error("not enough stock")]
    OutOfStock(Vec<Shortage>),
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    #[error("the basket mixes currencies")]
    MixedCurrencies,
    #[error("the stock kept changing; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a status change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no such order")]
    NotFound,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("a shipped order needs a carrier and a tracking number")]
    ShipmentMissing,
    #[error("the order kept changing; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The buyer.
#[derive(Clone, Debug)]
pub struct Customer {
    pub user_id: String,
    pub email: Option<String>,
}

/// What the client sends to check out.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct CheckoutRequest {
    /// The card number (digits only). Only its last four digits are kept.
    pub card_number: String,
    /// The recommendation that led here, for attribution.
    #[serde(default)]
    pub recommendation_id: Option<String>,
}

/// A basket line as the API shows it: current price and live availability.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BasketLineView {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: Price,
    #[schema(value_type = String, example = "39.98")]
    pub line_total: Price,
    /// Units available right now.
    pub available: i64,
    /// Whether `available` covers `quantity`.
    pub in_stock: bool,
}

/// A basket as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BasketView {
    pub lines: Vec<BasketLineView>,
    /// Exact decimal sum of the lines.
    #[schema(value_type = String, example = "39.98")]
    pub total: Price,
    #[schema(value_type = Option<String>, example = "EUR")]
    pub currency: Option<Currency>,
    /// Units over all lines.
    pub items: i64,
    /// When the basket expires if left alone.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn ms_to_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn line_total(unit: Price, q: i64) -> Price {
    Price::from_decimal(unit.amount() * Decimal::from(q)).unwrap_or(unit)
}

fn order_key(id: &str) -> Key {
    Key::new(format!("order#{id}"), "order")
}
fn owner_key(user_id: &str, sk: &str) -> Key {
    Key::new(format!("owner#{user_id}"), sk)
}
fn status_key(status: Status, sk: &str) -> Key {
    Key::new(format!("status#{status}"), sk)
}
fn all_key(sk: &str) -> Key {
    Key::new("all", sk)
}
fn idem_key(user_id: &str, key: &str) -> Key {
    Key::new(format!("idem#{user_id}#{key}"), "idem")
}
fn reservation_key(until: OffsetDateTime, order_id: &str) -> Key {
    let ms = (until.unix_timestamp_nanos() / 1_000_000) as i64;
    Key::new("reservation", format!("{ms:013}#{order_id}"))
}

#[derive(Debug, Serialize, Deserialize)]
struct IdemRecord {
    order_id: String,
    request_hash: String,
}

/// One page of orders.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The shop: baskets, checkout and orders on the storage port.
#[derive(Clone, Debug)]
pub struct Shop {
    store: Arc<dyn Store>,
    products: Products,
    payments: Arc<dyn PaymentProvider>,
    bus: Bus,
    /// Woken after every commit that wrote to the outbox.
    pub outbox_wake: Arc<Notify>,
    pub config: ShopConfig,
}

impl Shop {
    pub fn new(
        store: Arc<dyn Store>,
        payments: Arc<dyn PaymentProvider>,
        bus: Bus,
        config: ShopConfig,
    ) -> Self {
        Self {
            products: Products::new(store.clone()),
            store,
            payments,
            bus,
            outbox_wake: Arc::new(Notify::new()),
            config,
        }
    }

    pub fn payments(&self) -> &Arc<dyn PaymentProvider> {
        &self.payments
    }

    fn idle_ms(&self) -> i64 {
        self.config.basket_idle.as_millis() as i64
    }

    // ----- baskets -----

    pub async fn basket(&self, owner: &str) -> Result<BasketView, StoreError> {
        let b = basket::load(self.store.as_ref(), owner, self.idle_ms(), now_ms()).await?;
        self.view(&b).await
    }

    async fn stock(&self, product_id: &str) -> Result<Stock, StoreError> {
        Ok(
            match self
                .store
                .get(Table::Inventory, &stock_key(product_id))
                .await?
            {
                Some(item) => from_item(item)?,
                None => Stock::default(),
            },
        )
    }

    async fn view(&self, b: &Basket) -> Result<BasketView, StoreError> {
        let mut lines = Vec::with_capacity(b.lines.len());
        let mut total = Decimal::ZERO;
        let mut currency = None;
        for l in &b.lines {
            let Ok(id) = l.product_id.parse::<ProductId>() else {
                continue;
            };
            // A product deleted since it was added is left out of the view;
            // checkout names it.
            let Some(p) = self.products.get(id).await? else {
                continue;
            };
            let stock = self.stock(&l.product_id).await?;
            let lt = line_total(p.price, l.quantity);
            total += lt.amount();
            currency.get_or_insert(p.currency);
            lines.push(BasketLineView {
                product_id: l.product_id.clone(),
                name: p.name,
                quantity: l.quantity,
                unit_price: p.price,
                line_total: lt,
                available: stock.available.max(0),
                in_stock: stock.available >= l.quantity,
            });
        }
        Ok(BasketView {
            items: lines.iter().map(|l| l.quantity).sum(),
            lines,
            total: Price::from_decimal(total).unwrap_or_else(|_| Price::parse("0").expect("zero")),
            currency,
            expires_at: (!b.lines.is_empty()).then(|| ms_to_time(b.updated_ms + self.idle_ms())),
        })
    }

    /// Changes the owner's basket with `f` (read, change, conditional write,
    /// retried if another request changed it meanwhile).
    async fn modify_basket(
        &self,
        owner: &str,
        mut f: impl FnMut(&mut Basket) -> Result<(), BasketError>,
        then: Vec<TxOp>,
    ) -> Result<BasketView, BasketError> {
        for _ in 0..8 {
            let now = now_ms();
            let mut b = basket::load(self.store.as_ref(), owner, self.idle_ms(), now).await?;
            f(&mut b)?;
            let mut ops = vec![basket::save_op(owner, &b, now, self.idle_ms())?];
            ops.extend(then.iter().cloned());
            match self.store.transact(ops).await {
                Ok(()) => {
                    if !then.is_empty() {
                        self.outbox_wake.notify_one();
                    }
                    return Ok(self.view(&b).await?);
                }
                Err(StoreError::TransactionCanceled { .. } | StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BasketError::Busy)
    }

    /// Adds units of a product (to what is there) and, in the same
    /// transaction, puts `event` (the `basket.added`) in the outbox.
    pub async fn add_to_basket(
        &self,
        owner: &str,
        product_id: ProductId,
        quantity: i64,
        event: Option<Event>,
    ) -> Result<BasketView, BasketError> {
        let max = self.config.max_quantity;
        if !(1..=max).contains(&quantity) {
            return Err(BasketError::Quantity { max });
        }
        let product = self
            .products
            .get(product_id)
            .await?
            .ok_or_else(|| BasketError::UnknownProduct(product_id.to_string()))?;
        let id = product_id.to_string();
        let max_lines = self.config.max_lines;
        let then = match event {
            Some(e) => vec![outbox::put(Work::Publish { event: Box::new(e) })?],
            None => Vec::new(),
        };
        let first = self
            .basket(owner)
            .await?
            .currency
            .filter(|c| *c != product.currency);
        if let Some(c) = first {
            return Err(BasketError::Currency {
                product_id: id,
                basket: c.to_string(),
                product: product.currency.to_string(),
            });
        }
        self.modify_basket(
            owner,
            |b| {
                let q = b.quantity_of(&id) + quantity;
                if q > max {
                    return Err(BasketError::Quantity { max });
                }
                if b.quantity_of(&id) == 0 && b.lines.len() >= max_lines {
                    return Err(BasketError::TooManyLines(max_lines));
                }
                b.set(&id, q);
                Ok(())
            },
            then,
        )
        .await
    }

    /// Sets a product's quantity in the basket.
    pub async fn set_quantity(
        &self,
        owner: &str,
        product_id: &str,
        quantity: i64,
    ) -> Result<BasketView, BasketError> {
        let max = self.config.max_quantity;
        if !(1..=max).contains(&quantity) {
            return Err(BasketError::Quantity { max });
        }
        self.modify_basket(
            owner,
            |b| {
                if b.quantity_of(product_id) == 0 {
                    return Err(BasketError::NotInBasket(product_id.to_owned()));
                }
                b.set(product_id, quantity);
                Ok(())
            },
            Vec::new(),
        )
        .await
    }

    pub async fn remove_from_basket(
        &self,
        owner: &str,
        product_id: &str,
    ) -> Result<BasketView, BasketError> {
        self.modify_basket(
            owner,
            |b| {
                if b.quantity_of(product_id) == 0 {
                    return Err(BasketError::NotInBasket(product_id.to_owned()));
                }
                b.set(product_id, 0);
                Ok(())
            },
            Vec::new(),
        )
        .await
    }

    pub async fn clear_basket(&self, owner: &str) -> Result<(), StoreError> {
        self.store
            .delete(Table::Baskets, &basket::basket_key(owner), None)
            .await
            .map(|_| ())
    }

    /// Moves an anonymous session's basket into a user's (on login):
    /// quantities added and capped, the session's basket deleted, in one
    /// transaction.
    pub async fn merge_baskets(&self, from: &str, into: &str) -> Result<(), BasketError> {
        for _ in 0..8 {
            let now = now_ms();
            let anon = basket::load(self.store.as_ref(), from, self.idle_ms(), now).await?;
            if anon.version == 0 {
                return Ok(());
            }
            let mut user = basket::load(self.store.as_ref(), into, self.idle_ms(), now).await?;
            user.merge(&anon, self.config.max_quantity);
            user.lines.truncate(self.config.max_lines);
            let ops = vec![
                basket::save_op(into, &user, now, self.idle_ms())?,
                basket::delete_op(from, &anon),
            ];
            match self.store.transact(ops).await {
                Ok(()) => return Ok(()),
                Err(StoreError::TransactionCanceled { .. } | StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BasketError::Busy)
    }

    // ----- checkout -----

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
            total: Price::from_decimal(total)
                .map_err(|e| Reserve::Failed(CheckoutError::Store(StoreError::Invalid(e))))?,
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
                to,
                By::System,
                "system",
                note,
                Some(info),
                None,
                extra,
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

    // ----- orders -----

    pub async fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        self.store
            .get(Table::Orders, &order_key(id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// Orders newest first: a user's, those in a status, or all.
    pub async fn orders(
        &self,
        user_id: Option<&str>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<OrderPage, StoreError> {
        let pk = match (user_id, status) {
            (Some(u), _) => format!("owner#{u}"),
            (None, Some(s)) => format!("status#{s}"),
            (None, None) => "all".to_owned(),
        };
        let page = self
            .store
            .query(
                Table::Orders,
                &pk,
                &Query {
                    range: SortRange::All,
                    limit,
                    cursor,
                    descending: true,
                },
            )
            .await?;
        let mut items: Vec<OrderSummary> = page
            .items
            .into_iter()
            .map(from_item)
            .collect::<Result<_, _>>()?;
        if let (Some(_), Some(s)) = (user_id, status) {
            items.retain(|o| o.status == s);
        }
        Ok(OrderPage {
            items,
            next_cursor: page.cursor,
        })
    }

    /// Moves an order to `to` on behalf of `by` (retried against concurrent
    /// changes; the state machine is checked against the order as it is).
    pub async fn change_status(
        &self,
        id: &str,
        to: Status,
        by: By,
        actor: &str,
        note: Option<String>,
        shipment: Option<Shipment>,
    ) -> Result<Order, ChangeError> {
        if to == Status::Shipped && shipment.is_none() {
            return Err(ChangeError::ShipmentMissing);
        }
        for _ in 0..8 {
            let order = self.order(id).await?.ok_or(ChangeError::NotFound)?;
            match self
                .apply(
                    order,
                    to,
                    by,
                    actor,
                    note.clone(),
                    None,
                    shipment.clone(),
                    Vec::new(),
                )
                .await
            {
                Err(ChangeError::Busy) => continue,
                other => return other,
            }
        }
        Err(ChangeError::Busy)
    }

    /// One status change as one transaction, conditional on the order's
    /// version. `Busy` if the order changed since it was read.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        order: Order,
        to: Status,
        by: By,
        actor: &str,
        note: Option<String>,
        payment: Option<PaymentInfo>,
        shipment: Option<Shipment>,
        extra: Vec<TxOp>,
    ) -> Result<Order, ChangeError> {
        let effect = order::transition(order.status, to, by)?;
        let now = OffsetDateTime::now_utc();
        let mut next = order.clone();
        next.status = to;
        next.version += 1;
        next.history.push(StatusChange {
            status: to,
            at: now,
            actor: actor.to_owned(),
            note,
        });
        if let Some(p) = payment {
            next.payment = Some(p);
        }
        if let Some(s) = shipment {
            next.shipment = Some(s);
        }
        if order.status == Status::PendingPayment {
            next.reserved_until = None;
        }
        let sk = next.listing_sk();
        let summary = next.summary();
        let mut ops = vec![TxOp::Put {
            table: Table::Orders,
            item: to_item(&order_key(&next.id), &next)?,
            cond: Some(Cond::eq("version", order.version)),
        }];
        for key in [
            owner_key(&next.user_id, &sk),
            status_key(to, &sk),
            all_key(&sk),
        ] {
            ops.push(TxOp::Put {
                table: Table::Orders,
                item: to_item(&key, &summary)?,
                cond: None,
            });
        }
        ops.push(TxOp::Delete {
            table: Table::Orders,
            key: status_key(order.status, &sk),
            cond: None,
        });
        if let Some(until) = order
            .reserved_until
            .filter(|_| order.status == Status::PendingPayment)
        {
            ops.push(TxOp::Delete {
                table: Table::Orders,
                key: reservation_key(until, &order.id),
                cond: None,
            });
        }
        let (on_hand, reserved, available) = match effect {
            Effect::None | Effect::Refund => (0, 0, 0),
            Effect::ReleaseReservation => (0, -1, 1),
            Effect::Sell => (-1, -1, 0),
            Effect::RestockAndRefund => (1, 0, 1),
        };
        if (on_hand, reserved, available) != (0, 0, 0) {
            for l in &next.lines {
                let mut updates = vec![Update::add("version", 1)];
                for (attr, sign) in [
                    ("on_hand", on_hand),
                    ("reserved", reserved),
                    ("available", available),
                ] {
                    if sign != 0 {
                        updates.push(Update::add(attr, sign * l.quantity));
                    }
                }
                ops.push(TxOp::Update {
                    table: Table::Inventory,
                    key: stock_key(&l.product_id),
                    updates,
                    cond: None,
                });
            }
        }
        if matches!(effect, Effect::RestockAndRefund | Effect::Refund)
            || (order.status == Status::PendingPayment && to == Status::Cancelled)
        {
            ops.push(outbox::put(Work::Refund {
                order_id: next.id.clone(),
            })?);
        }
        let actor_field = Actor {
            user_id: Some(next.user_id.clone()),
            session_id: None,
        };
        ops.push(outbox::put(Work::Publish {
            event: Box::new(Event::new(
                "api",
                EventPayload::OrderStatusChanged {
                    order_id: next.id.clone(),
                    actor: actor_field.clone(),
                    status: to.as_str().to_owned(),
                },
            )),
        })?);
        if effect == Effect::Sell {
            ops.push(outbox::put(Work::Publish {
                event: Box::new(Event::new(
                    "api",
                    EventPayload::PurchaseCompleted {
                        order_id: next.id.clone(),
                        actor: actor_field,
                        lines: next
                            .lines
                            .iter()
                            .filter_map(|l| {
                                Some(PurchaseLine {
                                    product_id: l.product_id.parse().ok()?,
                                    quantity: l.quantity,
                                    unit_price: l.unit_price,
                                })
                            })
                            .collect(),
                        total: next.total,
                        currency: next.currency,
                        recommendation_id: next.recommendation_id.clone(),
                        stock_settled: true,
                    },
                )),
            })?);
        }
        ops.push(outbox::put(Work::Notify {
            notification: notification(&next),
        })?);
        ops.extend(extra);
        match self.store.transact(ops).await {
            Ok(()) => {}
            Err(StoreError::TransactionCanceled { .. } | StoreError::Conflict(_)) => {
                return Err(ChangeError::Busy);
            }
            Err(e) => return Err(e.into()),
        }
        metrics::counter!("shopstream_order_transitions_total", "to" => to.as_str()).increment(1);
        self.outbox_wake.notify_one();
        self.bus.publish(Change::OrderUpdated {
            order_id: next.id.clone(),
            user_id: next.user_id.clone(),
            status: to.as_str().to_owned(),
            version: next.version,
        });
        if effect != Effect::None && effect != Effect::Refund {
            self.stock_changed(next.lines.iter().map(|l| l.product_id.as_str()))
                .await;
        }
        Ok(next)
    }

    /// Publishes the stock of these products on the bus and raises any
    /// low-stock alert their new level calls for.
    async fn stock_changed(&self, ids: impl Iterator<Item = &str>) {
        for id in ids {
            match self.stock(id).await {
                Ok(s) => {
                    self.bus.publish(Change::stock(id, &s));
                    if let Err(e) = check_alert(self.store.as_ref(), &self.bus, id, &s).await {
                        tracing::warn!(error = %e, product_id = id, "low-stock check failed; the sweeper retries it");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, product_id = id, "cannot read stock after a change")
                }
            }
        }
    }

    /// Cancels every `pending_payment` order whose reservation has expired,
    /// releasing its stock. Returns how many were released.
    pub async fn sweep_reservations(&self) -> Result<usize, StoreError> {
        let now = OffsetDateTime::now_utc();
        let upto = format!("{:013}~", (now.unix_timestamp_nanos() / 1_000_000) as i64);
        let page = self
            .store
            .query(
                Table::Orders,
                "reservation",
                &Query {
                    range: SortRange::Between("0".into(), upto),
                    limit: 100,
                    ..Query::default()
                },
            )
            .await?;
        let mut released = 0;
        for item in page.items {
            let key = Key::of(&item)?;
            let Some((_, id)) = key.sk.split_once('#') else {
                continue;
            };
            match self.order(id).await? {
                Some(o) if o.status == Status::PendingPayment => {
                    match self
                        .change_status(
                            id,
                            Status::Cancelled,
                            By::System,
                            "system",
                            Some("the reservation expired before the payment settled".into()),
                            None,
                        )
                        .await
                    {
                        Ok(_) => released += 1,
                        Err(ChangeError::Transition(_)) => {}
                        Err(ChangeError::Store(e)) => return Err(e),
                        Err(e) => {
                            tracing::warn!(error = %e, order_id = id, "cannot release an expired reservation yet")
                        }
                    }
                }
                // Settled meanwhile: the index entry is stale.
                _ => {
                    self.store.delete(Table::Orders, &key, None).await?;
                }
            }
        }
        if released > 0 {
            metrics::counter!("shopstream_reservations_expired_total").increment(released as u64);
        }
        Ok(released)
    }
}

enum Reserve {
    KeyTaken,
    Retry,
    Failed(CheckoutError),
}

fn owner_of(c: &Customer) -> String {
    format!("user:{}", c.user_id)
}

fn last4(card: &str) -> String {
    let digits: Vec<char> = card.chars().filter(|c| c.is_ascii_digit()).collect();
    digits[digits.len().saturating_sub(4)..].iter().collect()
}

fn rand_ms(attempt: u32) -> u64 {
    let base = 5u64 << attempt.min(6);
    base + (uuid::Uuid::new_v4().as_u128() % base as u128) as u64
}

fn notification(o: &Order) -> Notification {
    let (kind, subject, body) = match o.status {
        Status::Paid => (
            "order_confirmation",
            format!("Your order {} is confirmed", o.id),
            format!(
                "Thank you! We received your payment of {} {} for {} item(s):\n{}",
                o.total,
                o.currency,
                o.lines.iter().map(|l| l.quantity).sum::<i64>(),
                o.lines
                    .iter()
                    .map(|l| format!("- {} × {} at {}", l.quantity, l.name, l.unit_price))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        ),
        s => (
            "order_status",
            format!(
                "Your order {} is now {}",
                o.id,
                s.as_str().replace('_', " ")
            ),
            match &o.shipment {
                Some(sh) if s == Status::Shipped => format!(
                    "Your order is on its way with {} (tracking number {}).",
                    sh.carrier, sh.tracking_number
                ),
                _ => format!("Your order is now {}.", s.as_str().replace('_', " ")),
            },
        ),
    };
    Notification {
        // One notification per order version: a repeat delivery rewrites it.
        id: format!("{}-v{}", o.id, o.version),
        kind: kind.into(),
        order_id: o.id.clone(),
        user_id: o.user_id.clone(),
        to: o.email.clone(),
        subject,
        body,
    }
}
