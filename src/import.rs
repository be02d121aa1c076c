//! `shopstream import retailrocket`: the RetailRocket e-commerce data set's
//! `events.csv` (`timestamp,visitorid,event,itemid,transactionid`) as
//! shopstream events, in time order.
//!
//! Mapping (RetailRocket's visitors are anonymous, and it has no prices):
//! - `view` → `browse.viewed` by session `rr-VISITOR`;
//! - `addtocart` → `basket.added`, quantity 1;
//! - `transaction` rows sharing a `transactionid` → one `purchase.completed`
//!   (order `rr-TRANSACTION`, one line per row, quantity 1, unit price 0 —
//!   the data set has no prices);
//! - item `N` → product id `00000000-0000-8000-8000-NNNNNNNNNNNN` (N in hex),
//!   the same on every import.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail};
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// The product id an item number maps to.
pub fn product_id(item: u64) -> String {
    format!("00000000-0000-8000-8000-{:012x}", item & 0xffff_ffff_ffff)
}

#[derive(Debug)]
struct Row {
    at_ms: i64,
    visitor: u64,
    kind: Kind,
    item: u64,
    transaction: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    View,
    AddToCart,
    Transaction,
}

fn parse_row(line: &str) -> Result<Row, String> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != 5 {
        return Err(format!("expected 5 fields, found {}", f.len()));
    }
    let num = |i: usize, name: &str| -> Result<u64, String> {
        f[i].parse::<u64>()
            .map_err(|_| format!("{name} {:?} is not a whole number", f[i]))
    };
    let kind = match f[2] {
        "view" => Kind::View,
        "addtocart" => Kind::AddToCart,
        "transaction" => Kind::Transaction,
        other => return Err(format!("unknown event {other:?}")),
    };
    let transaction = if f[4].is_empty() {
        None
    } else {
        Some(num(4, "transactionid")?)
    };
    if kind == Kind::Transaction && transaction.is_none() {
        return Err("a transaction row needs a transactionid".into());
    }
    Ok(Row {
        at_ms: num(0, "timestamp")? as i64,
        visitor: num(1, "visitorid")?,
        kind,
        item: num(3, "itemid")?,
        transaction,
    })
}

fn rfc3339(ms: i64) -> anyhow::Result<String> {
    Ok(OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)?.format(&Rfc3339)?)
}

fn envelope(kind: &str, at: &str, data: serde_json::Value) -> Vec<u8> {
    json!({
        "id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": at,
        "source": "import:retailrocket", "version": 1, "data": data
    })
    .to_string()
    .into_bytes()
}

/// Reads the file and returns its events as JSON lines, oldest first, and
/// how many rows were skipped (with the first few reasons printed).
pub fn convert(path: &Path, limit: Option<usize>) -> anyhow::Result<(Vec<Vec<u8>>, usize)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == "timestamp,visitorid,event,itemid,transactionid" => {}
        Some((_, h)) => bail!(
            "{}: the header is {h:?}, expected \"timestamp,visitorid,event,itemid,transactionid\" \
             (RetailRocket's events.csv)",
            path.display()
        ),
        None => bail!("{} is empty", path.display()),
    }
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        match parse_row(line) {
            Ok(r) => rows.push(r),
            Err(e) => {
                skipped += 1;
                if skipped <= 5 {
                    eprintln!("{}:{}: skipped: {e}", path.display(), n + 1);
                }
            }
        }
    }
    rows.sort_by_key(|r| r.at_ms);
    // A transaction's rows become one order, at its first row's time.
    let mut orders: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let (Kind::Transaction, Some(t)) = (r.kind, r.transaction) {
            orders.entry(t).or_default().push(i);
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let at = rfc3339(r.at_ms)?;
        let session = format!("rr-{}", r.visitor);
        let product = product_id(r.item);
        match r.kind {
            Kind::View => out.push(envelope(
                "browse.viewed",
                &at,
                json!({"session_id": session, "product_id": product}),
            )),
            Kind::AddToCart => out.push(envelope(
                "basket.added",
                &at,
                json!({"session_id": session, "product_id": product, "quantity": 1}),
            )),
            Kind::Transaction => {
                let t = r.transaction.unwrap_or_default();
                let Some(members) = orders.get(&t) else {
                    continue;
                };
                if members.first() != Some(&i) {
                    continue;
                }
                let lines: Vec<_> = members
                    .iter()
                    .map(|&j| {
                        json!({"product_id": product_id(rows[j].item), "quantity": 1, "unit_price": "0.00"})
                    })
                    .collect();
                out.push(envelope(
                    "purchase.completed",
                    &at,
                    json!({"order_id": format!("rr-{t}"), "session_id": session,
                           "lines": lines, "total": "0.00", "currency": "EUR"}),
                ));
            }
        }
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_to_events_in_time_order_and_transactions_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.csv");
        std::fs::write(
            &path,
            "timestamp,visitorid,event,itemid,transactionid\n\
             1433221332117,257597,view,355908,\n\
             1433221000000,992329,addtocart,248676,\n\
             1433224214164,599528,transaction,356475,4000\n\
             1433224214164,599528,transaction,15335,4000\n\
             1433224214999,1,teleport,1,\n",
        )
        .unwrap();
        let (events, skipped) = convert(&path, None).unwrap();
        assert_eq!(skipped, 1);
        let events: Vec<domain::Event> = events
            .iter()
            .map(|e| domain::Event::decode(e).expect("a valid event"))
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.payload.type_name()).collect();
        assert_eq!(
            kinds,
            ["basket.added", "browse.viewed", "purchase.completed"]
        );
        let purchase = serde_json::to_value(&events[2]).unwrap();
        assert_eq!(purchase["data"]["lines"].as_array().unwrap().len(), 2);
        assert_eq!(purchase["data"]["order_id"], "rr-4000");
        assert_eq!(product_id(355908), "00000000-0000-8000-8000-000000056e44");
        assert_eq!(
            serde_json::to_value(&events[1]).unwrap()["data"]["product_id"],
            product_id(355908)
        );
    }

    #[test]
    fn a_wrong_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        assert!(
            convert(&path, None)
                .unwrap_err()
                .to_string()
                .contains("header")
        );
    }
}
