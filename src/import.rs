//! `shopstream import --format FORMAT FILE…`: a public data set's behaviour
//! log as shopstream events, oldest first (the files of one import are
//! merged in time order). The mappings are in docs/evaluation.md and the
//! README:
//!
//! - `retailrocket` (`events.csv`: `timestamp,visitorid,event,itemid,
//!   transactionid`): `view` → `browse.viewed` by session `rr-VISITOR`,
//!   `addtocart` → `basket.added` (quantity 1), the `transaction` rows of one
//!   `transactionid` → one `purchase.completed` (order `rr-TRANSACTION`, one
//!   line per row, quantity 1, unit price 0: the data set has no prices);
//!   item `N` → the product whose SKU is `N` (its id is
//!   `ProductId::external("N")`, as a `products` import of the catalogue
//!   with those SKUs makes it).
//! - `movielens` (`ratings.csv`): every rating → `browse.viewed` by user
//!   `ml-USER`; a rating of 4 or more → also a `purchase.completed` (order
//!   `ml-USER-MOVIE`); movie `N` → the product whose SKU is `N`.
//! - `groceries` (`Member_number,Date,itemDescription`): a member's lines on
//!   one date → one `purchase.completed` by user `gr-MEMBER` at noon UTC
//!   (order `gr-MEMBER-DATE`, a line per item, quantity = its lines);
//!   an item → product `00000000-0000-8000-8002-{low 48 bits of the 64-bit FNV-1a of its name}`.
//! - `jsonl`: one event envelope per line, sent as it is, in file order.
//!
//! Imported MovieLens and Groceries purchases are history, not sales from
//! this shop's stock: they carry `stock_settled: true`, so they count in
//! analytics and behaviour and leave stock alone.

use domain::Invalid;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// The product id a RetailRocket item number (or a MovieLens movie id)
/// maps to: the product imported with that number as its SKU.
pub fn product_id(item: u64) -> String {
    domain::ProductId::external(&item.to_string()).to_string()
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

fn parse_row(line: &str) -> Result<Row, Invalid> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != 5 {
        return Err(Invalid::new(format!(
            "expected 5 fields, found {}",
            f.len()
        )));
    }
    let num = |i: usize, name: &str| -> Result<u64, Invalid> {
        f[i].parse::<u64>()
            .map_err(|_| Invalid::new(format!("{name} {:?} is not a whole number", f[i])))
    };
    let kind = match f[2] {
        "view" => Kind::View,
        "addtocart" => Kind::AddToCart,
        "transaction" => Kind::Transaction,
        other => return Err(Invalid::new(format!("unknown event {other:?}"))),
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

fn envelope(source: &str, kind: &str, at: &str, data: serde_json::Value) -> Vec<u8> {
    json!({
        "id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": at,
        "source": source, "version": 1, "data": data
    })
    .to_string()
    .into_bytes()
}

/// The data formats `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// RetailRocket's `events.csv`.
    Retailrocket,
    /// MovieLens `ratings.csv`.
    Movielens,
    /// The Groceries data set (`Member_number,Date,itemDescription`).
    Groceries,
    /// Event envelopes, one JSON object per line.
    Jsonl,
    /// A product catalogue (JSON lines, or CSV for a `.csv` file), SKUs as
    /// the products' external ids: see `catalogue.rs`.
    Products,
}

/// An event line with the time it sorts by (milliseconds).
type Timed = (i64, Vec<u8>);

/// Reads the files and returns their events as JSON lines, oldest first
/// (`jsonl`: in file order), at most `limit` of them, and how many rows were
/// skipped (with the first few reasons printed).
pub fn convert(
    format: Format,
    files: &[PathBuf],
    limit: Option<usize>,
) -> anyhow::Result<(Vec<Vec<u8>>, usize)> {
    let mut all: Vec<Timed> = Vec::new();
    let mut skipped = 0;
    for path in files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        match format {
            Format::Retailrocket => {
                let (events, s) = retailrocket(path, &text)?;
                all.extend(events);
                skipped += s;
            }
            Format::Movielens | Format::Groceries => all.extend(dataset(format, path, &text)?),
            Format::Jsonl => all.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| (0, l.as_bytes().to_vec())),
            ),
            Format::Products => bail!("a catalogue is not events: see catalogue.rs"),
        }
    }
    // Stable: ties (and every jsonl line) keep their order.
    all.sort_by_key(|(at, _)| *at);
    if let Some(l) = limit {
        all.truncate(l);
    }
    Ok((all.into_iter().map(|(_, e)| e).collect(), skipped))
}

/// A product id in one data set's namespace (`8002`: Groceries, whose
/// items are names, not SKUs).
fn product_in(namespace: u16, n: u64) -> String {
    format!(
        "00000000-0000-8000-{namespace:04x}-{:012x}",
        n & 0xffff_ffff_ffff
    )
}

/// 64-bit FNV-1a: a stable number for a name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// MovieLens or Groceries, through the evaluation's reader (one reading of
/// the formats for both).
fn dataset(format: Format, path: &Path, text: &str) -> anyhow::Result<Vec<Timed>> {
    use recommender::data::{self, Kind};
    let data = match format {
        Format::Movielens => data::movielens(text),
        _ => data::groceries(text),
    }
    .with_context(|| format!("{} is not a {format:?} file", path.display()))?;
    let mut out = Vec::new();
    match format {
        Format::Movielens => {
            let source = "import:movielens";
            for i in &data.interactions {
                let (user, movie) = (&data.users[i.user as usize], &data.items[i.item as usize]);
                let n: u64 = movie
                    .trim()
                    .parse()
                    .with_context(|| format!("movieId {movie:?} is not a number"))?;
                let (product, user_id) = (product_id(n), format!("ml-{}", user.trim()));
                let at = rfc3339(i.ts * 1000)?;
                out.push((
                    i.ts * 1000,
                    envelope(
                        source,
                        "browse.viewed",
                        &at,
                        json!({"user_id": user_id, "product_id": product}),
                    ),
                ));
                if i.kind == Kind::Purchase {
                    out.push((
                        i.ts * 1000,
                        envelope(
                            source,
                            "purchase.completed",
                            &at,
                            json!({"order_id": format!("{user_id}-{}", movie.trim()), "user_id": user_id,
                                "lines": [{"product_id": product, "quantity": 1, "unit_price": "0.00"}],
                                "total": "0.00", "currency": "EUR", "stock_settled": true}),
                        ),
                    ));
                }
            }
        }
        _ => {
            // One basket per member and day, its lines in file order.
            let mut baskets: BTreeMap<(i64, u32), Vec<(String, i64)>> = BTreeMap::new();
            for i in &data.interactions {
                let product = product_in(0x8002, fnv1a(&data.items[i.item as usize]));
                let lines = baskets.entry((i.ts, i.user)).or_default();
                match lines.iter_mut().find(|(p, _)| *p == product) {
                    Some((_, q)) => *q += 1,
                    None => lines.push((product, 1)),
                }
            }
            for ((ts, user), lines) in baskets {
                let user_id = format!("gr-{}", data.users[user as usize]);
                let at = rfc3339(ts * 1000)?;
                let date = &at[..10];
                let lines: Vec<_> = lines
                    .into_iter()
                    .map(|(p, q)| json!({"product_id": p, "quantity": q, "unit_price": "0.00"}))
                    .collect();
                out.push((
                    ts * 1000,
                    envelope(
                        "import:groceries",
                        "purchase.completed",
                        &at,
                        json!({"order_id": format!("{user_id}-{date}"), "user_id": user_id,
                            "lines": lines, "total": "0.00", "currency": "EUR", "stock_settled": true}),
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// RetailRocket's `events.csv`: its events with their times, and how many
/// rows were skipped.
fn retailrocket(path: &Path, text: &str) -> anyhow::Result<(Vec<Timed>, usize)> {
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
    let source = "import:retailrocket";
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let at = rfc3339(r.at_ms)?;
        let session = format!("rr-{}", r.visitor);
        let product = product_id(r.item);
        match r.kind {
            Kind::View => out.push((
                r.at_ms,
                envelope(
                    source,
                    "browse.viewed",
                    &at,
                    json!({"session_id": session, "product_id": product}),
                ),
            )),
            Kind::AddToCart => out.push((
                r.at_ms,
                envelope(
                    source,
                    "basket.added",
                    &at,
                    json!({"session_id": session, "product_id": product, "quantity": 1}),
                ),
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
                out.push((
                    r.at_ms,
                    envelope(
                        source,
                        "purchase.completed",
                        &at,
                        json!({"order_id": format!("rr-{t}"), "session_id": session,
                               "lines": lines, "total": "0.00", "currency": "EUR"}),
                    ),
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
        let (events, skipped) = convert(Format::Retailrocket, &[path], None).unwrap();
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
        assert_eq!(
            product_id(355908),
            domain::ProductId::external("355908").to_string()
        );
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
            convert(Format::Retailrocket, &[path], None)
                .unwrap_err()
                .to_string()
                .contains("header")
        );
    }

    fn decoded(lines: &[Vec<u8>]) -> Vec<serde_json::Value> {
        lines
            .iter()
            .map(|l| {
                let e = domain::Event::decode(l).expect("a valid event");
                serde_json::to_value(&e).unwrap()
            })
            .collect()
    }

    #[test]
    fn movielens_ratings_are_views_and_good_ones_purchases_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        std::fs::write(
            &a,
            "userId,movieId,rating,timestamp\n1,31,2.5,300\n1,1029,4.0,100\n",
        )
        .unwrap();
        std::fs::write(&b, "userId,movieId,rating,timestamp\n2,31,5,200\n").unwrap();
        let (lines, skipped) = convert(Format::Movielens, &[a.clone(), b], None).unwrap();
        assert_eq!(skipped, 0);
        let e = decoded(&lines);
        let kinds: Vec<&str> = e.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "browse.viewed",
                "purchase.completed",
                "browse.viewed",
                "purchase.completed",
                "browse.viewed"
            ]
        );
        assert_eq!(e[0]["data"]["user_id"], "ml-1");
        assert_eq!(e[0]["data"]["product_id"], product_id(1029));
        assert_eq!(e[0]["occurred_at"], "1970-01-01T00:01:40Z");
        assert_eq!(e[1]["data"]["stock_settled"], true);
        assert_eq!(e[2]["data"]["user_id"], "ml-2");
        assert_eq!(e[4]["data"]["product_id"], product_id(31));
        // The oldest N over all files.
        let (two, _) = convert(Format::Movielens, &[a], Some(2)).unwrap();
        assert_eq!(two.len(), 2);
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "userId,movieId,rating,timestamp\n1,x,4,y\n").unwrap();
        let err = convert(Format::Movielens, &[bad], None).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn grocery_lines_of_a_member_and_day_are_one_basket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.csv");
        std::fs::write(
            &path,
            "Member_number,Date,itemDescription\n7,2015-01-02,whole milk\n8,2015-01-01,soda\n\
             7,2015-01-02,rolls/buns\n7,2015-01-02,whole milk\n",
        )
        .unwrap();
        let (lines, _) = convert(Format::Groceries, &[path], None).unwrap();
        let e = decoded(&lines);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["data"]["user_id"], "gr-8");
        assert_eq!(e[0]["occurred_at"], "2015-01-01T12:00:00Z");
        let basket = &e[1]["data"];
        assert_eq!(basket["order_id"], "gr-7-2015-01-02");
        let lines = basket["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["quantity"], 2);
        assert_eq!(
            lines[0]["product_id"],
            product_in(0x8002, fnv1a("whole milk"))
        );
        assert_ne!(lines[0]["product_id"], lines[1]["product_id"]);
    }

    #[test]
    fn jsonl_lines_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "{\"b\":1}\n\n{\"a\":2}\n").unwrap();
        let (lines, _) = convert(Format::Jsonl, &[path], None).unwrap();
        assert_eq!(lines, [b"{\"b\":1}".to_vec(), b"{\"a\":2}".to_vec()]);
    }
}
