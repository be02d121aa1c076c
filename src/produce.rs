//! `shopstream produce` and `shopstream import`: events from files onto the
//! configured stream, in batches, with a progress bar and a final count.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use domain::Event;
use indicatif::{ProgressBar, ProgressStyle};
use ingest::EventSink;

use crate::{
    config::Settings,
    wiring::{event_sink, open_store_unless_served, outside_sink},
};

/// Where produced records go: straight onto the stream, or through a running
/// server's `POST /api/events` (when that server holds the embedded store).
pub enum Sender {
    Direct(Arc<dyn EventSink>),
    Http {
        base: String,
        token: String,
        http: reqwest::Client,
        max_per_request: usize,
    },
}

impl Sender {
    pub async fn new(
        settings: &Settings,
        url: Option<String>,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        if url.is_none() {
            if let Some(sink) = outside_sink(settings).await? {
                // An outside stream needs no store: records go straight to it.
                return Ok(Self::Direct(sink));
            }
            if let Some(store) = open_store_unless_served(settings).await? {
                return Ok(Self::Direct(event_sink(settings, &store).await?));
            }
        }
        let Some(token) = token else {
            bail!(
                "a server holds the embedded store, so events go through its API: pass --token \
                 (or SHOPSTREAM_TOKEN) with an admin or service access token"
            );
        };
        Ok(Self::Http {
            base: url.unwrap_or_else(|| format!("http://{}", settings.listen)),
            token,
            http: reqwest::Client::new(),
            max_per_request: settings.max_events_per_request,
        })
    }

    /// Sends JSON lines; returns (sent, refused). Directly, records are sent
    /// as they are: a bad line is dead-lettered by the pipeline with its
    /// reason, like any bad record. Through the API, bad events are refused.
    pub async fn send(
        &self,
        lines: &[Vec<u8>],
        bar: &ProgressBar,
    ) -> anyhow::Result<(usize, usize)> {
        match self {
            Self::Direct(sink) => {
                let records: Vec<(String, Vec<u8>)> = lines
                    .iter()
                    .map(|l| {
                        let key = Event::decode(l)
                            .map(|e| e.payload.partition_key())
                            .unwrap_or_else(|_| "undecodable".to_owned());
                        (key, l.clone())
                    })
                    .collect();
                sink.publish_raw(&records).await?;
                bar.inc(lines.len() as u64);
                Ok((lines.len(), 0))
            }
            Self::Http {
                base,
                token,
                http,
                max_per_request,
            } => {
                let (mut sent, mut failed) = (0, 0);
                for chunk in lines.chunks(*max_per_request) {
                    let mut body = Vec::with_capacity(chunk.iter().map(|l| l.len() + 1).sum());
                    body.push(b'[');
                    for (i, l) in chunk.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        body.extend_from_slice(l);
                    }
                    body.push(b']');
                    let r = http
                        .post(format!("{base}/api/events"))
                        .bearer_auth(token)
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
                Ok((sent, failed))
            }
        }
    }
}

pub fn progress(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

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
    let lines: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    send_all(settings, lines, url, token, batch).await
}

pub async fn import(
    settings: &Settings,
    format: crate::import::Format,
    files: Vec<PathBuf>,
    limit: Option<usize>,
    send: crate::SendArgs,
) -> anyhow::Result<()> {
    let (lines, skipped) =
        tokio::task::spawn_blocking(move || crate::import::convert(format, &files, limit))
            .await??;
    if skipped > 0 {
        eprintln!("skipped {skipped} unreadable rows");
    }
    send_all(settings, lines, send.url, send.token, send.batch).await
}

async fn send_all(
    settings: &Settings,
    lines: Vec<Vec<u8>>,
    url: Option<String>,
    token: Option<String>,
    batch: usize,
) -> anyhow::Result<()> {
    let sender = Sender::new(settings, url, token).await?;
    let bar = progress(lines.len() as u64, "events");
    let (mut sent, mut failed) = (0usize, 0usize);
    for chunk in lines.chunks(batch.clamp(1, 10_000)) {
        let (s, f) = sender.send(chunk, &bar).await?;
        sent += s;
        failed += f;
    }
    bar.finish_and_clear();
    println!("sent {sent}, failed {failed}");
    if failed > 0 {
        bail!("{failed} events were refused");
    }
    Ok(())
}
