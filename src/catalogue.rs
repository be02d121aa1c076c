//! `shopstream import --format products FILE…`: a shop's catalogue, as JSON
//! lines or CSV (by the file's extension: `.csv` is CSV, anything else JSON
//! lines). A row has the fields `POST /api/products` takes — `sku`, `name`,
//! `price`, `currency`, `category`; `description`, `supplier_id`,
//! `image_url`, `low_stock_threshold`, `attributes` — and in CSV an
//! attribute is a column `attributes.NAME`; an empty cell is left out.
//!
//! The SKU is the product's external id: the product's id is
//! [`ProductId::external`] of it, so a re-import updates the same products,
//! history imports and events that name the SKU (`"product_id": "SKU-1"`)
//! land on it, and its interactions reach the recommender. Each product is
//! stored, then announced with a `product.upserted` event (the pipeline files
//! its supplier and threshold with its stock). A bad row is reported with its
//! line number and the rest are imported.

use std::{collections::HashMap, path::Path, sync::Arc};

use anyhow::{Context, bail};
use domain::{Event, EventPayload, Product, ProductDraft, ProductId, product::DraftMode};
use ingest::EventSink;
use serde_json::{Map, Value};
use storage::{
    Store,
    products::{Imported, Products},
};

use crate::config::Settings;

/// A product read from a file, with the file and the line it is on.
pub type Row = (String, u64, Product);

/// One row that was not imported.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub file: String,
    pub line: u64,
    pub why: String,
}

/// Reads the rows of one file as JSON objects with their line numbers; rows
/// that are not objects are refused.
fn rows(path: &Path, text: &str, out: &mut Vec<(u64, Value)>, refused: &mut Vec<Refused>) {
    let file = path.display().to_string();
    let refuse = |line: u64, why: String| Refused {
        file: file.clone(),
        line,
        why,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(text.as_bytes());
        let headers = match reader.headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                refused.push(refuse(1, format!("cannot read the header: {e}")));
                return;
            }
        };
        for record in reader.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    refused.push(refuse(line, e.to_string()));
                    continue;
                }
            };
            let line = record.position().map_or(0, csv::Position::line);
            let mut row = Map::new();
            let mut attributes = Map::new();
            for (name, cell) in headers.iter().zip(record.iter()) {
                if cell.is_empty() {
                    continue;
                }
                if let Some(attr) = name.strip_prefix("attributes.") {
                    attributes.insert(attr.to_owned(), Value::String(cell.to_owned()));
                } else if name == "low_stock_threshold" {
                    // A number in JSON; left as text when it is not one, for
                    // the product's own check to name.
                    let v = cell
                        .parse::<u64>()
                        .map_or_else(|_| Value::String(cell.to_owned()), Value::from);
                    row.insert(name.to_owned(), v);
                } else {
                    row.insert(name.to_owned(), Value::String(cell.to_owned()));
                }
            }
            if !attributes.is_empty() {
                row.insert("attributes".into(), Value::Object(attributes));
            }
            out.push((line, Value::Object(row)));
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let n = n as u64 + 1;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v @ Value::Object(_)) => out.push((n, v)),
                Ok(_) => refused.push(refuse(n, "a row is a JSON object".into())),
                Err(e) => refused.push(refuse(n, format!("not JSON: {e}"))),
            }
        }
    }
}

/// The products of the files, each with its file and line, and the rows
/// refused. A SKU given twice is refused the second time.
pub fn parse(
    files: &[std::path::PathBuf],
    now: time::OffsetDateTime,
) -> anyhow::Result<(Vec<Row>, Vec<Refused>)> {
    let mut products = Vec::new();
    let mut refused = Vec::new();
    let mut first: HashMap<String, (String, u64)> = HashMap::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut found = Vec::new();
        rows(path, &text, &mut found, &mut refused);
        let file = path.display().to_string();
        for (line, row) in found {
            match ProductDraft::parse(&row, DraftMode::Create) {
                Err(errors) => refused.push(Refused {
                    file: file.clone(),
                    line,
                    why: errors
                        .0
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                }),
                Ok(draft) => {
                    if let Some((f, l)) = first.get(&draft.sku) {
                        refused.push(Refused {
                            file: file.clone(),
                            line,
                            why: format!("sku {:?} is already on {f} line {l}", draft.sku),
                        });
                        continue;
                    }
                    first.insert(draft.sku.clone(), (file.clone(), line));
                    let id = ProductId::external(&draft.sku);
                    products.push((file.clone(), line, draft.into_product(id, now)));
                }
            }
        }
    }
    Ok((products, refused))
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// Stores the products and publishes a `product.upserted` for each one
/// stored, unchanged ones too (so a run stopped between storing and
/// announcing is completed by running it again); appends the ones the store
/// refused to `refused`. A store outage stops the import after announcing
/// what was stored.
///
/// Two chunks are in flight: one's operations are built and its events
/// encoded while the store commits the other's.
pub async fn store_all(
    store: Arc<dyn Store>,
    events: Arc<dyn EventSink>,
    products: Vec<Row>,
    refused: &mut Vec<Refused>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Tally> {
    use futures::{StreamExt, stream};
    let catalogue = Products::new(store);
    let stopping = std::sync::atomic::AtomicBool::new(false);
    let mut chunks = stream::iter(products.chunks(10_000))
        .map(|chunk| store_chunk(&catalogue, events.as_ref(), chunk, &stopping))
        .buffered(2);
    let mut done = Tally::default();
    let mut outage = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        done.created += chunk.tally.created;
        done.updated += chunk.tally.updated;
        done.unchanged += chunk.tally.unchanged;
        refused.extend(chunk.refused);
        if let Some(why) = chunk.outage {
            // The chunk in flight finishes (what it stored is announced);
            // no other starts.
            stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            outage.get_or_insert(why);
        }
        bar.inc(chunk.rows as u64);
    }
    if let Some(why) = outage {
        bail!("{why} (what was stored is announced; run the import again)");
    }
    Ok(done)
}

/// What storing one chunk of rows did.
#[derive(Debug, Default)]
struct Chunk {
    rows: usize,
    tally: Tally,
    refused: Vec<Refused>,
    /// Why the store failed, if it did.
    outage: Option<String>,
}

/// Stores one chunk and announces what it stored; nothing once `stopping`.
async fn store_chunk(
    catalogue: &Products,
    events: &dyn EventSink,
    chunk: &[Row],
    stopping: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<Chunk> {
    let mut out = Chunk::default();
    if stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(out);
    }
    out.rows = chunk.len();
    let outcomes = catalogue
        .import(chunk.iter().map(|(_, _, p)| p.clone()).collect())
        .await;
    let mut announce = Vec::new();
    for ((file, line, p), outcome) in chunk.iter().zip(outcomes) {
        let stored = match outcome {
            Ok(Imported::Created(p)) => {
                out.tally.created += 1;
                p
            }
            Ok(Imported::Updated(p)) => {
                out.tally.updated += 1;
                p
            }
            Ok(Imported::Unchanged(p)) => {
                out.tally.unchanged += 1;
                p
            }
            Err(storage::products::ProductError::Store(e)) if !e.is_permanent() => {
                out.outage.get_or_insert(format!(
                    "the store failed importing {file} line {line}: {e}"
                ));
                continue;
            }
            Err(e) => {
                out.refused.push(Refused {
                    file: file.clone(),
                    line: *line,
                    why: format!("sku {:?}: {e}", p.sku),
                });
                continue;
            }
        };
        announce.push(Event::new(
            "import:products",
            EventPayload::ProductUpserted(Box::new(stored)),
        ));
    }
    for events_chunk in announce.chunks(5_000) {
        events.publish(events_chunk).await?;
    }
    Ok(out)
}

/// The command: parse, store, report.
pub async fn import(
    settings: &Settings,
    files: Vec<std::path::PathBuf>,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let now = domain::now();
    let (mut products, mut refused) =
        tokio::task::spawn_blocking(move || parse(&files, now)).await??;
    if let Some(l) = limit {
        products.truncate(l);
    }
    let Some(store) = crate::wiring::open_store_unless_served(settings).await? else {
        bail!(
            "a server holds the embedded store: stop it to import a catalogue (products are \
             written to the store directly, then announced on the stream)"
        );
    };
    let events = crate::wiring::event_sink(settings, &store).await?;
    let bar = crate::produce::progress(products.len() as u64, "products");
    let done = store_all(store, events, products, &mut refused, &bar).await?;
    bar.finish_and_clear();
    println!(
        "imported {} products: {} new, {} updated, {} unchanged; {} rows refused",
        done.created + done.updated + done.unchanged,
        done.created,
        done.updated,
        done.unchanged,
        refused.len()
    );
    refused.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    for r in refused.iter().take(50) {
        eprintln!("{} line {}: {}", r.file, r.line, r.why);
    }
    if refused.len() > 50 {
        eprintln!("… and {} more", refused.len() - 50);
    }
    if !refused.is_empty() {
        bail!("{} rows were refused", refused.len());
    }
    Ok(())
}
