//! `shopstream train`: trains the recommender on the store's interaction log
//! now, with a progress display, and saves it where the servers load it
//! from. When a server holds the embedded store, it asks that server to
//! train instead (`POST /api/admin/model/train`).

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    config::Settings,
    wiring::{blobs, open_store_unless_served},
};

pub async fn run(
    settings: &Settings,
    url: Option<String>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    if url.is_none()
        && let Some(store) = open_store_unless_served(settings).await?
    {
        // Nothing is served here: the impression queue has no writer.
        let (impressions, _) = serving::attribution::channel(store.clone(), 1);
        let recs = serving::Recs::new(
            store.clone(),
            storage::products::Products::new(store),
            blobs(settings).await,
            settings.recommender_history_hours,
            impressions,
        );
        let b = bar.clone();
        let t = recs
            .train(Arc::new(move |phase: &str| b.set_message(phase.to_owned())))
            .await;
        bar.finish_and_clear();
        let t = t?;
        println!(
            "model {} trained on {} interactions ({} customers and sessions, {} items) in {} ms; saved",
            t.version,
            t.interactions,
            t.subjects,
            t.items.len(),
            t.training_ms
        );
        return Ok(());
    }
    let Some(token) = token else {
        bail!(
            "a server holds the embedded store, so it trains: pass --token (or SHOPSTREAM_TOKEN) \
             with an admin access token"
        );
    };
    let base = url.unwrap_or_else(|| format!("http://{}", settings.listen));
    bar.set_message(format!("training on the server at {base}"));
    let r = reqwest::Client::new()
        .post(format!("{base}/api/admin/model/train"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    bar.finish_and_clear();
    if !status.is_success() {
        // A problem body: its detail, then each field's message (the
        // model's reason for refusing to train is one of them).
        let mut reason = body["detail"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        for e in body["errors"].as_array().into_iter().flatten() {
            if let Some(m) = e["message"].as_str() {
                reason.push_str("; ");
                reason.push_str(m);
            }
        }
        bail!("{base} answered {status}: {reason}");
    }
    println!(
        "model {} trained on {} interactions ({} items) in {} ms by the server",
        body["version"].as_str().unwrap_or("?"),
        body["interactions"],
        body["items"],
        body["training_ms"]
    );
    Ok(())
}
