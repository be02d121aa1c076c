//! Baskets: one per owner (`user:{id}` or `session:{id}`), changed by
//! read–modify–write conditional on the basket's version.

use domain::{Event, Price, ProductId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use storage::{Cond, Contention, Key, Store, StoreError, Table, TxOp, from_item, to_item};

use crate::{
    BasketError, BasketLineView, BasketView, Shop, basket,
    keys::{line_total, ms_to_time, now_ms},
    outbox,
    outbox::Work,
};

/// One product in a basket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLine {
    pub product_id: String,
    pub quantity: i64,
}

/// A stored basket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basket {
    /// In the order they were first added.
    #[serde(default)]
    pub lines: Vec<BasketLine>,
    /// Milliseconds since the epoch of the last change.
    #[serde(default)]
    pub updated_ms: i64,
    /// Seconds since the epoch after which the basket is gone (DynamoDB TTL).
    #[serde(default)]
    pub ttl: i64,
    #[serde(default)]
    pub version: u64,
}

impl Basket {
    pub fn quantity_of(&self, product_id: &str) -> i64 {
        self.lines
            .iter()
            .find(|l| l.product_id == product_id)
            .map_or(0, |l| l.quantity)
    }

    /// Sets a product's quantity; zero removes it.
    pub fn set(&mut self, product_id: &str, quantity: i64) {
        match self
            .lines
            .iter_mut()
            .position(|l| l.product_id == product_id)
        {
            Some(i) if quantity <= 0 => {
                self.lines.remove(i);
            }
            Some(i) => self.lines[i].quantity = quantity,
            None if quantity > 0 => self.lines.push(BasketLine {
                product_id: product_id.to_owned(),
                quantity,
            }),
            None => {}
        }
    }

    /// Adds another basket's lines, each product's quantity capped at `max`.
    pub fn merge(&mut self, other: &Basket, max: i64) {
        for l in &other.lines {
            let q = (self.quantity_of(&l.product_id) + l.quantity).min(max);
            self.set(&l.product_id, q);
        }
    }
}

pub fn basket_key(owner: &str) -> Key {
    Key::new(format!("basket#{owner}"), "basket")
}

/// Reads a basket; one idle for longer than `idle_ms` counts as empty (its
/// version is kept so the next write replaces it).
pub async fn load(
    store: &dyn Store,
    owner: &str,
    idle_ms: i64,
    now_ms: i64,
) -> Result<Basket, StoreError> {
    let Some(item) = store.get(Table::Baskets, &basket_key(owner)).await? else {
        return Ok(Basket::default());
    };
    let mut b: Basket = from_item(item)?;
    if now_ms - b.updated_ms > idle_ms {
        b.lines.clear();
    }
    Ok(b)
}

/// The write that stores `b` if its stored version is still `b.version`.
pub fn save_op(owner: &str, b: &Basket, now_ms: i64, idle_ms: i64) -> Result<TxOp, StoreError> {
    let cond = if b.version == 0 {
        Cond::NotExists
    } else {
        Cond::eq("version", b.version)
    };
    let next = Basket {
        lines: b.lines.clone(),
        updated_ms: now_ms,
        ttl: (now_ms + idle_ms) / 1000 + 1,
        version: b.version + 1,
    };
    Ok(TxOp::Put {
        table: Table::Baskets,
        item: to_item(&basket_key(owner), &next)?,
        cond: Some(cond),
    })
}

/// The delete of `b` if it is unchanged.
pub fn delete_op(owner: &str, b: &Basket) -> TxOp {
    TxOp::Delete {
        table: Table::Baskets,
        key: basket_key(owner),
        cond: (b.version > 0).then(|| Cond::eq("version", b.version)),
    }
}

impl Shop {
    pub async fn basket(&self, owner: &str) -> Result<BasketView, StoreError> {
        let b = basket::load(self.store.as_ref(), owner, self.idle_ms(), now_ms()).await?;
        self.view(&b).await
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
        let mut tries = Contention::new(8);
        while tries.next().await {
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
                Err(e) if e.is_contention() => continue,
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
        let mut tries = Contention::new(8);
        while tries.next().await {
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
                Err(e) if e.is_contention() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BasketError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_adds_changes_and_removes_lines_in_order() {
        let mut b = Basket::default();
        b.set("a", 2);
        b.set("b", 1);
        b.set("a", 5);
        assert_eq!(b.quantity_of("a"), 5);
        assert_eq!(b.lines[0].product_id, "a");
        b.set("a", 0);
        assert_eq!(b.lines.len(), 1);
        b.set("zzz", 0);
        assert_eq!(b.lines.len(), 1);
    }

    #[test]
    fn merge_adds_quantities_and_caps_them() {
        let mut user = Basket::default();
        user.set("a", 98);
        let mut anon = Basket::default();
        anon.set("a", 5);
        anon.set("b", 2);
        user.merge(&anon, 99);
        assert_eq!(user.quantity_of("a"), 99);
        assert_eq!(user.quantity_of("b"), 2);
    }
}
