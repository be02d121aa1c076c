//! `shopstream evaluate`: the offline protocol on a data file, every model
//! over the same targets, as a table or JSON.

use std::{path::Path, time::Instant};

use anyhow::Context;
use recommender::{
    Recommender,
    baselines::{Ease, ItemKnn, MostPopular, SessionKnn},
    data::{self, Dataset},
    evaluate::{self, Protocol, Scores},
    model::{self, Hybrid},
};

/// EASE's regularisation.
const EASE_LAMBDA: f64 = 200.0;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// MovieLens `ratings.csv`: userId,movieId,rating,timestamp.
    Movielens,
    /// Groceries: Member_number,Date,itemDescription.
    Groceries,
}

pub fn load(format: Format, file: &Path) -> anyhow::Result<Dataset> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let data = match format {
        Format::Movielens => data::movielens(&text),
        Format::Groceries => data::groceries(&text),
    }
    .with_context(|| format!("{} is not a {format:?} file", file.display()))?;
    anyhow::ensure!(
        !data.interactions.is_empty(),
        "{} holds no interactions",
        file.display()
    );
    Ok(data)
}

pub fn run(
    format: Format,
    file: &Path,
    train_fraction: f64,
    max_targets: Option<usize>,
    ease_items: usize,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        train_fraction > 0.0 && train_fraction < 1.0,
        "--train-fraction must be between 0 and 1 (exclusive)"
    );
    let data = load(format, file)?;
    let protocol = Protocol {
        train_fraction,
        max_targets,
    };
    let (train, cut) = evaluate::split(&data, &protocol);
    eprintln!(
        "{}: {} interactions, {} users, {} items; training on the first {} (until t = {})",
        file.display(),
        data.interactions.len(),
        data.users.len(),
        data.items.len(),
        train.len(),
        data.interactions[cut.saturating_sub(1)].ts
    );
    let started = Instant::now();
    let popular = MostPopular::fit(&train, data.items.len());
    let knn = ItemKnn::fit(&train, data.items.len(), 200, 200);
    let sknn = SessionKnn::fit(&train, data.items.len());
    eprintln!(
        "trained most-popular, item-kNN and session-kNN in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let ease = Ease::fit(&train, data.items.len(), ease_items, EASE_LAMBDA)?;
    eprintln!(
        "trained EASE (the {} most popular items, lambda {EASE_LAMBDA}) in {:.2} s",
        ease_items.min(data.items.len()),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let cfg = model::Config {
        repeats: data.repeats,
        ..model::Config::default()
    };
    let (learned, report) = Hybrid::fit(&train, data.items.len(), cfg, &|phase| {
        eprintln!("model: {phase}")
    })?;
    eprintln!(
        "trained the model in {:.2} s ({} ranker examples; the next item was a candidate for {} of {} training targets); weights: {:?}",
        started.elapsed().as_secs_f64(),
        report.rows,
        report.targets_with_candidate,
        report.targets,
        report.weights
    );
    let models: Vec<&dyn Recommender> = vec![&learned, &popular, &knn, &sknn, &ease];
    // One bar per model, on stderr (hidden when it is not a terminal).
    let bars = indicatif::MultiProgress::new();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let scores = evaluate::run_with_progress(&data, &protocol, &models, &mut |step| match step {
        evaluate::Step::Model { name, targets } => {
            if let Some(b) = bar.take() {
                b.finish();
            }
            let b = bars.add(crate::produce::progress(targets as u64, "targets"));
            b.set_message(name.to_owned());
            bar = Some(b);
        }
        evaluate::Step::Target => {
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
    });
    if let Some(b) = bar {
        b.finish();
    }
    let _ = bars.clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&scores))?);
    } else {
        print!("{}", table(&scores));
    }
    Ok(())
}

fn to_json(scores: &[Scores]) -> serde_json::Value {
    serde_json::Value::Array(
        scores
            .iter()
            .map(|s| {
                serde_json::json!({
                    "model": s.model, "targets": s.targets,
                    "hr@10": s.hr10, "hr@20": s.hr20, "mrr@10": s.mrr10, "mrr@20": s.mrr20,
                    "ndcg@10": s.ndcg10, "ndcg@20": s.ndcg20,
                    "coverage@10": s.coverage10, "coverage@20": s.coverage20,
                    "latency_mean_ms": s.mean_ms, "latency_p99_ms": s.p99_ms,
                })
            })
            .collect(),
    )
}

/// A Markdown table, one row per model.
pub fn table(scores: &[Scores]) -> String {
    let mut out = String::from(
        "| model | targets | HR@10 | HR@20 | MRR@10 | MRR@20 | NDCG@10 | NDCG@20 | coverage@10 | coverage@20 | mean ms | p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in scores {
        out.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            s.model, s.targets, s.hr10, s.hr20, s.mrr10, s.mrr20, s.ndcg10, s.ndcg20, s.coverage10, s.coverage20, s.mean_ms, s.p99_ms
        ));
    }
    out
}
