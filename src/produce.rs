//! `shopstream produce`: events from a JSON-lines file onto the stream.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use domain::Event;
use indicatif::{ProgressBar, ProgressStyle};
use ingest::StoreLog;
use storage::StoreError;

use crate::{config::Settings, open_store};

pub async fn run(
    settings: &Settings,
    file: PathBuf,
    url: Option<String>,
    token: Option<String>,
    batch: usize,
) -> anyhow::Result<()> {
    let text = tokio::fs::read_to_string(&file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let batch = batch.clamp(1, 10_000);
    let bar = ProgressBar::new(lines.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let direct = match url {
        Some(_) => None,
        None => match open_store(settings).await {
            Ok(store) => Some(store),
            Err(e)
                if matches!(
                    e.downcast_ref::<StoreError>(),
                    Some(StoreError::InUse { .. })
                ) =>
            {
                None
            }
            Err(e) => return Err(e),
        },
    };
    let (mut sent, mut failed) = (0usize, 0usize);
    match direct {
        Some(store) => {
            // Straight onto the log. Records are sent as they are: a bad line
            // is dead-lettered by the pipeline with its reason, like any bad record.
            let log = StoreLog::new(Arc::clone(&store), settings.log_partitions);
            for chunk in lines.chunks(batch) {
                let records: Vec<(String, Vec<u8>)> = chunk
                    .iter()
                    .map(|l| {
                        let key = Event::decode(l.as_bytes())
                            .map(|e| e.payload.partition_key())
                            .unwrap_or_else(|_| "undecodable".to_owned());
                        (key, l.as_bytes().to_vec())
                    })
                    .collect();
                log.append(&records).await?;
                sent += chunk.len();
                bar.inc(chunk.len() as u64);
            }
        }
        None => {
            let Some(token) = token else {
                bail!(
                    "a server holds the embedded store, so events go through its API: pass --token \
                     (or SHOPSTREAM_TOKEN) with an admin or service access token"
                );
            };
            let base = url.unwrap_or_else(|| format!("http://{}", settings.listen));
            let http = reqwest::Client::new();
            for chunk in lines.chunks(batch.min(settings.max_events_per_request)) {
                let body = format!("[{}]", chunk.join(","));
                let r = http
                    .post(format!("{base}/api/events"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?;
                let status = r.status();
                let answer: serde_json::Value = r.json().await.unwrap_or_default();
                match status.as_u16() {
                    202 => {
                        let accepted = answer["accepted"].as_u64().unwrap_or(0) as usize;
                        sent += accepted;
                        failed += chunk.len() - accepted;
                    }
                    422 => failed += chunk.len(),
                    _ => bail!("{base} answered {status}: {answer}"),
                }
                bar.inc(chunk.len() as u64);
            }
        }
    }
    bar.finish_and_clear();
    println!("sent {sent}, failed {failed}");
    if failed > 0 {
        bail!("{failed} events were refused");
    }
    Ok(())
}
