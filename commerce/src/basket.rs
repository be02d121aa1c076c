//! Baskets: one per owner (`user:{id}` or `session:{id}`), changed by
//! read–modify–write conditional on the basket's version.

use serde::{Deserialize, Serialize};
use storage::{Cond, Key, Store, StoreError, Table, TxOp, from_item, to_item};

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
