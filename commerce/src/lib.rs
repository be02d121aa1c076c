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
//! - [`Shop`] (here): the shop's handle and its configuration.
//! - [`basket`]: the stored basket and the basket operations.
//! - `checkout`: reserve, pay, settle (idempotent per `Idempotency-Key`).
//! - `orders`: reads, status changes as one transaction each, the sweep of
//!   expired reservations.
//! - [`order`]: the order, its summaries and the state machine (pure).
//! - `notification`: the customer's message for a status (pure).
//! - `keys`: the orders table's keys (pure).
//! - `error`, `views`: what callers get back: refusals and API views.
//! - [`payment`]: the payment port and the simulated card processor.
//! - [`outbox`]: the outbox, the notifiers and the relay.
//! - [`suppliers`]: supplier records (contact e-mail, webhook URL).
//! - [`alerts`]: low-stock alerts delivered to suppliers by the relay
//!   (file, SES, SNS, signed webhook).

pub mod alerts;
pub mod basket;
mod checkout;
mod error;
mod keys;
mod notification;
pub mod order;
mod orders;
pub mod outbox;
pub mod payment;
pub mod suppliers;
mod views;

pub use error::{BasketError, ChangeError, CheckoutError, Shortage};
pub use views::{BasketLineView, BasketView, CheckoutRequest, Customer, OrderPage};

use std::{sync::Arc, time::Duration};

use processors::{
    Bus,
    changes::Change,
    pipeline::check_alert,
    state::{Stock, stock_key},
};

use storage::{Store, StoreError, Table, from_item, products::Products};
use tokio::sync::Notify;

use crate::payment::PaymentProvider;

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

    pub(crate) fn idle_ms(&self) -> i64 {
        self.config.basket_idle.as_millis() as i64
    }

    pub(crate) async fn stock(&self, product_id: &str) -> Result<Stock, StoreError> {
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

    /// Publishes the stock of these products on the bus and raises any
    /// low-stock alert their new level calls for.
    pub(crate) async fn stock_changed(&self, ids: impl Iterator<Item = &str>) {
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
}
