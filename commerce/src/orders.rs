//! Orders: reads, status changes through the state machine, and the sweep
//! of reservations whose payment never settled.

use domain::{Actor, Event, EventPayload, event::PurchaseLine};
use processors::{changes::Change, state::stock_key};
use storage::{
    Cond, Contention, Key, Query, SortRange, StoreError, Table, TxOp, Update, from_item, to_item,
};
use time::OffsetDateTime;

use crate::{
    ChangeError, OrderPage, Shop,
    keys::{all_key, order_key, owner_key, reservation_key, status_key},
    notification, order,
    order::{By, Effect, Order, OrderSummary, PaymentInfo, Shipment, Status, StatusChange},
    outbox,
    outbox::Work,
};

/// A status change to make: the new status, who asks, and what comes with
/// it into the same transaction.
#[derive(Debug)]
pub(crate) struct Transition<'a> {
    pub to: Status,
    pub by: By,
    pub actor: &'a str,
    pub note: Option<String>,
    pub payment: Option<PaymentInfo>,
    pub shipment: Option<Shipment>,
    /// More operations that must commit with the change.
    pub extra: Vec<TxOp>,
}

impl<'a> Transition<'a> {
    pub fn new(to: Status, by: By, actor: &'a str) -> Self {
        Self {
            to,
            by,
            actor,
            note: None,
            payment: None,
            shipment: None,
            extra: Vec::new(),
        }
    }
}

impl Shop {
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
        let mut tries = Contention::new(8);
        while tries.next().await {
            let order = self.order(id).await?.ok_or(ChangeError::NotFound)?;
            match self
                .apply(
                    order,
                    Transition {
                        note: note.clone(),
                        shipment: shipment.clone(),
                        ..Transition::new(to, by, actor)
                    },
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
    pub(crate) async fn apply(
        &self,
        order: Order,
        change: Transition<'_>,
    ) -> Result<Order, ChangeError> {
        let Transition {
            to,
            by,
            actor,
            note,
            payment,
            shipment,
            extra,
        } = change;
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
            notification: notification::for_order(&next),
        })?);
        ops.extend(extra);
        match self.store.transact(ops).await {
            Ok(()) => {}
            Err(e) if e.is_contention() => {
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

    /// Cancels every `pending_payment` order whose reservation has expired,
    /// releasing its stock. Returns how many were released.
    pub async fn sweep_reservations(&self) -> Result<usize, StoreError> {
        let now = OffsetDateTime::now_utc();
        let upto = format!("{:013}~", domain::clock::to_ms(now));
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

    /// Releases the stock of checkouts whose payment never settled.
    pub async fn sweep_reservations_periodically(
        self,
        every: std::time::Duration,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            match self.sweep_reservations().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(orders = n, "released expired reservations"),
                Err(e) => tracing::warn!(error = %e, "reservation sweep failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}
