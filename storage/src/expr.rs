//! Conditions, updates and item sizes evaluated in memory. These are the
//! embedded adapter's semantics, written to match DynamoDB's so that the same
//! conformance suite passes on both.

use std::{cmp::Ordering, str::FromStr};

use rust_decimal::Decimal;

use crate::{
    StoreError, StoreResult,
    port::{
        Cond, Item, Key, MAX_ITEM_BYTES, MAX_PARTITION_KEY_BYTES, MAX_SORT_KEY_BYTES, PK, SK, TxOp,
        Update, Value,
    },
};

/// Whether the condition holds on the item (`None`: the item does not exist).
pub fn holds(cond: &Cond, item: Option<&Item>) -> bool {
    let attr = |name: &str| item.and_then(|i| i.get(name));
    match cond {
        Cond::Exists => item.is_some(),
        Cond::NotExists => item.is_none(),
        Cond::Has(a) => attr(a).is_some(),
        Cond::HasNot(a) => attr(a).is_none(),
        Cond::Eq(a, v) => attr(a).is_some_and(|x| compare(x, v) == Some(Ordering::Equal)),
        Cond::Ne(a, v) => attr(a).is_some_and(|x| compare(x, v) != Some(Ordering::Equal)),
        Cond::Lt(a, v) => attr(a).is_some_and(|x| compare(x, v) == Some(Ordering::Less)),
        Cond::Le(a, v) => {
            attr(a).is_some_and(|x| matches!(compare(x, v), Some(Ordering::Less | Ordering::Equal)))
        }
        Cond::Gt(a, v) => attr(a).is_some_and(|x| compare(x, v) == Some(Ordering::Greater)),
        Cond::Ge(a, v) => attr(a)
            .is_some_and(|x| matches!(compare(x, v), Some(Ordering::Greater | Ordering::Equal))),
        Cond::And(cs) => cs.iter().all(|c| holds(c, item)),
        Cond::Or(cs) => cs.iter().any(|c| holds(c, item)),
    }
}

/// Orders two values of the same type: numbers numerically, strings and
/// binaries by bytes; other types only by equality. `None` if incomparable.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::N(x), Value::N(y)) => Some(number(x).ok()?.cmp(&number(y).ok()?)),
        (Value::S(x), Value::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::B(x), Value::B(y)) => Some(x.cmp(y)),
        _ if a == b => Some(Ordering::Equal),
        _ => None,
    }
}

fn number(s: &str) -> StoreResult<Decimal> {
    Decimal::from_str(s)
        .or_else(|_| Decimal::from_scientific(s))
        .map_err(|_| StoreError::Invalid(format!("not a number: {s}")))
}

/// The item after the updates, made from `current` (or from the key alone if
/// the item does not exist yet).
pub fn apply_updates(key: &Key, current: Option<Item>, updates: Vec<Update>) -> StoreResult<Item> {
    let mut item = current.unwrap_or_else(|| key.to_item());
    for u in updates {
        match u {
            Update::Set(a, _) | Update::Add(a, _) | Update::Remove(a)
                if a.as_str() == PK || a.as_str() == SK =>
            {
                return Err(StoreError::Invalid(format!(
                    "cannot update key attribute {a}"
                )));
            }
            Update::Set(a, v) => {
                item.insert(a, v);
            }
            Update::Remove(a) => {
                item.remove(&a);
            }
            Update::Add(a, Value::N(delta)) => {
                let old = match item.get(&a) {
                    None => Decimal::ZERO,
                    Some(Value::N(n)) => number(n)?,
                    Some(_) => {
                        return Err(StoreError::Invalid(format!(
                            "cannot add a number to non-number attribute {a}"
                        )));
                    }
                };
                let sum = old
                    .checked_add(number(&delta)?)
                    .ok_or_else(|| StoreError::Invalid(format!("overflow adding to {a}")))?;
                item.insert(a, Value::N(sum.normalize().to_string()));
            }
            Update::Add(a, _) => {
                return Err(StoreError::Invalid(format!("can only add a number to {a}")));
            }
        }
    }
    Ok(item)
}

/// The item's size by DynamoDB's rules: attribute names plus values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::S(s) => s.len(),
        Value::N(n) => number_size(n),
        Value::B(b) => b.len(),
        Value::Bool(_) | Value::Null(_) => 1,
        Value::Ss(ss) => ss.iter().map(String::len).sum(),
        Value::Ns(ns) => ns.iter().map(|n| number_size(n)).sum(),
        Value::Bs(bs) => bs.iter().map(Vec::len).sum(),
        Value::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        Value::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
    }
}

/// Numbers take about one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits = n
        .trim_start_matches(['-', '+'])
        .trim_start_matches(['0', '.'])
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    (digits.div_ceil(2) + 1).min(21)
}

/// Refuses a key longer than DynamoDB takes.
pub fn check_key(key: &Key) -> StoreResult<()> {
    for (attr, size, limit) in [
        ("partition key", key.pk.len(), MAX_PARTITION_KEY_BYTES),
        ("sort key", key.sk.len(), MAX_SORT_KEY_BYTES),
    ] {
        if size > limit {
            return Err(StoreError::KeyTooLarge { attr, size, limit });
        }
    }
    Ok(())
}

/// About how many bytes a transaction's operations carry, by the item-size
/// rules: whole items for puts, keys and new values for updates, keys for
/// deletes and checks. What [`Store::max_transaction_bytes`] is checked
/// against.
///
/// [`Store::max_transaction_bytes`]: crate::Store::max_transaction_bytes
pub fn transaction_size(ops: &[TxOp]) -> usize {
    ops.iter().map(op_size).sum()
}

/// What a transaction's writes cost on DynamoDB, by its rules: 2 write
/// units per started KB of each item written in a transaction. An update
/// counts its key and the values it writes (the item's other attributes
/// are not known here: a lower bound where they take it past a KB); a
/// condition check counts as a write.
pub fn transaction_write_units(ops: &[TxOp]) -> u64 {
    transaction_cost(ops).1
}

/// [`transaction_size`] and [`transaction_write_units`] in one pass.
pub fn transaction_cost(ops: &[TxOp]) -> (usize, u64) {
    ops.iter().fold((0, 0), |(bytes, units), op| {
        let size = op_size(op);
        (bytes + size, units + 2 * size.div_ceil(1024).max(1) as u64)
    })
}

/// About how many bytes one operation carries (see [`transaction_size`]).
pub fn op_size(op: &TxOp) -> usize {
    let key = |k: &Key| PK.len() + k.pk.len() + SK.len() + k.sk.len();
    match op {
        TxOp::Put { item, .. } => item_size(item),
        TxOp::Update {
            key: k, updates, ..
        } => {
            key(k)
                + updates
                    .iter()
                    .map(|u| match u {
                        Update::Set(a, v) | Update::Add(a, v) => a.len() + value_size(v),
                        Update::Remove(a) => a.len(),
                    })
                    .sum::<usize>()
        }
        TxOp::Delete { key: k, .. } | TxOp::Check { key: k, .. } => key(k),
    }
}

/// Refuses a transaction over `max_bytes` or with a key too long.
pub fn check_transaction_size(ops: &[TxOp], max_bytes: usize) -> StoreResult<()> {
    for op in ops {
        check_key(&op.table_and_key()?.1)?;
    }
    let size = transaction_size(ops);
    if size > max_bytes {
        return Err(StoreError::TransactionTooLarge {
            size,
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Refuses an item over the size limit or with a key too long.
pub fn check_size(item: &Item) -> StoreResult<()> {
    if let Ok(key) = Key::of(item) {
        check_key(&key)?;
    }
    let size = item_size(item);
    if size > MAX_ITEM_BYTES {
        Err(StoreError::ItemTooLarge {
            size,
            limit: MAX_ITEM_BYTES,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, Value)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn numbers_compare_numerically_and_types_do_not_mix() {
        let i = item(&[("n", Value::N("10".into())), ("s", Value::S("10".into()))]);
        assert!(holds(&Cond::Gt("n".into(), Value::N("9".into())), Some(&i)));
        // As strings "10" < "9".
        assert!(holds(&Cond::Lt("s".into(), Value::S("9".into())), Some(&i)));
        assert!(!holds(
            &Cond::Eq("n".into(), Value::S("10".into())),
            Some(&i)
        ));
        assert!(!holds(
            &Cond::Ne("missing".into(), Value::N("1".into())),
            Some(&i)
        ));
        assert!(holds(
            &Cond::Eq("n".into(), Value::N("10.0".into())),
            Some(&i)
        ));
        assert!(holds(&Cond::NotExists, None));
        assert!(!holds(&Cond::Has("n".into()), None));
    }

    #[test]
    fn add_treats_missing_as_zero_and_refuses_strings() {
        let key = Key::new("a", "b");
        let i = apply_updates(&key, None, vec![Update::add("c", 5), Update::add("c", -2)]).unwrap();
        assert_eq!(i["c"], Value::N("3".into()));
        assert_eq!(i["pk"], Value::S("a".into()));
        let s = item(&[("c", Value::S("x".into()))]);
        assert!(apply_updates(&key, Some(s.clone()), vec![Update::add("c", 1)]).is_err());
        assert!(apply_updates(&key, None, vec![Update::Remove("pk".into())]).is_err());
    }

    #[test]
    fn size_follows_dynamodb_rules() {
        let i = item(&[
            ("ab", Value::S("xyz".into())),
            ("n", Value::N("12345".into())),
        ]);
        assert_eq!(item_size(&i), 2 + 3 + 1 + 4);
        let big = item(&[("b", Value::B(vec![0; MAX_ITEM_BYTES]))]);
        assert!(matches!(
            check_size(&big),
            Err(StoreError::ItemTooLarge { .. })
        ));
    }

    #[test]
    fn a_transactional_write_costs_two_units_per_started_kb() {
        let put = |bytes: usize| TxOp::Put {
            table: crate::Table::Behaviour,
            item: item(&[("b", Value::B(vec![0; bytes]))]),
            cond: None,
        };
        let key = Key::new("inventory", "p1");
        let ops = [
            // 1 + 1,023 bytes: one KB; 1 + 1,024: two.
            put(1023),
            put(1024),
            TxOp::Update {
                table: crate::Table::Inventory,
                key: key.clone(),
                updates: vec![Update::add("on_hand", 3)],
                cond: None,
            },
            TxOp::Check {
                table: crate::Table::Leases,
                key,
                cond: Cond::Exists,
            },
        ];
        assert_eq!(transaction_write_units(&ops), 2 + 4 + 2 + 2);
    }
}
