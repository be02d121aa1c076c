//! Decode + fold throughput: the CPU part of the pipeline, without the store.
//! `cargo bench -p processors --bench fold`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use processors::{
    Record,
    fold::{Origin, Snapshot, fold, needs},
    pipeline::decode,
};
use serde_json::json;

/// A mixed batch like a shop's: adjustments, views, basket adds, purchases.
fn batch(n: usize) -> Vec<Record> {
    let products: Vec<String> = (0..200).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    (0..n)
        .map(|i| {
            let p = &products[i % products.len()];
            let (kind, data) = match i % 10 {
                0..=3 => ("browse.viewed", json!({"session_id": format!("s{}", i % 500), "product_id": p})),
                4..=5 => ("stock.adjusted", json!({"product_id": p, "delta": 3, "reason": "received"})),
                6..=7 => ("basket.added", json!({"user_id": format!("u{}", i % 300), "product_id": p, "quantity": 1})),
                _ => ("purchase.completed", json!({"order_id": format!("o{i}"), "user_id": format!("u{}", i % 300),
                    "lines": [{"product_id": p, "quantity": 1, "unit_price": "9.99"}], "total": "9.99", "currency": "EUR"})),
            };
            let e = json!({"id": uuid::Uuid::now_v7(), "type": kind, "occurred_at": "2026-11-24T10:00:00Z",
                "source": "bench", "data": data});
            Record { position: i.to_string(), data: serde_json::to_vec(&e).unwrap() }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let records = batch(1000);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("decode_1000", |b| {
        b.iter_batched(|| records.clone(), decode, BatchSize::SmallInput)
    });
    let decoded = decode(records.clone());
    // Every read the fold asks for finds nothing: the fold does the same work.
    let snapshot = Snapshot::default();
    let origin = Origin {
        stream: "log",
        shard: "0",
        now_ms: 0,
    };
    group.bench_function("fold_1000", |b| {
        b.iter(|| {
            let _ = needs(&decoded);
            fold(std::hint::black_box(&decoded), &snapshot, &origin)
        })
    });
    group.bench_function("decode_and_fold_1000", |b| {
        b.iter_batched(
            || records.clone(),
            |r| fold(&decode(r), &snapshot, &origin),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
