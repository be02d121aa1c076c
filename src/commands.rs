//! The one-shot commands: `init`, `user create`, `dead-letters`.

use domain::{Email, Role};
use processors::Bus;

use crate::{
    DeadLetterCommand, UserCommand,
    config::{Settings, StreamKind},
    wiring::{app_state, blobs, event_sink, open_store, shop},
};

pub(crate) async fn create_user(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create {
        email,
        password,
        role,
        supplier_id,
        name,
    } = command;
    let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role {e}"))?;
    let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    domain::user::check_password(&password).map_err(|e| anyhow::anyhow!("--password {e}"))?;
    if role == Role::Supplier && supplier_id.is_none() {
        anyhow::bail!("--supplier-id is required for a supplier");
    }
    if role != Role::Supplier && supplier_id.is_some() {
        anyhow::bail!("--supplier-id is only for suppliers");
    }
    let name = name.unwrap_or_else(|| {
        email
            .as_str()
            .split('@')
            .next()
            .unwrap_or("user")
            .to_owned()
    });
    let store = open_store(settings).await?;
    let events = event_sink(settings, &store).await?;
    let bus = Bus::default();
    let shop = shop(settings, &store, &bus);
    let (state, _) = app_state(settings, store, events, bus, shop).await?;
    let user = api::create_user(&state, email, password, name, role, supplier_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("created {} {} ({})", user.role, user.email, user.id);
    Ok(())
}

pub(crate) async fn dead_letters(
    settings: &Settings,
    command: DeadLetterCommand,
) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match command {
        DeadLetterCommand::List { limit } => {
            let (items, _) =
                processors::read::dead_letters(store.as_ref(), limit.clamp(1, 1000), None).await?;
            for (id, d) in items {
                let line = serde_json::json!({
                    "id": id, "reason": d.reason, "detail": d.detail, "stream": d.stream,
                    "shard": d.shard, "position": d.position, "at": d.at,
                    "raw": String::from_utf8_lossy(&d.raw),
                });
                println!("{line}");
            }
        }
        DeadLetterCommand::Replay { id } => {
            let sink = event_sink(settings, &store).await?;
            match sink.replay_dead_letter(store.as_ref(), &id).await? {
                Some(to) => println!("replayed {id} to {to}"),
                None => anyhow::bail!("no dead letter {id}"),
            }
        }
    }
    Ok(())
}

/// What [`init`] creates, as JSON on stdout: the deployment's Terraform is
/// checked against it (`deploy/terraform/test_terraform.py`).
pub(crate) fn init_plan(settings: &Settings) -> anyhow::Result<()> {
    let tables: Vec<_> = storage::Table::ALL
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": format!("{}{}", settings.table_prefix, t.name()),
                "hash_key": storage::PK,
                "range_key": storage::SK,
                "attribute_type": "S",
                "billing_mode": "PAY_PER_REQUEST",
                "ttl_attribute": t.ttl_attribute(),
            })
        })
        .collect();
    let plan = serde_json::json!({
        "tables": tables,
        "kinesis_stream": (settings.stream == StreamKind::Kinesis).then(|| settings.kinesis_stream.clone()),
        "images_bucket": settings.images_bucket,
    });
    println!("{}", serde_json::to_string_pretty(&plan)?);
    Ok(())
}

/// Creates the tables, and the stream, topic or bucket the settings name.
/// Safe to run again.
pub(crate) async fn init(settings: &Settings) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    store.create_tables().await?;
    println!(
        "tables ready on the {} backend (prefix {:?})",
        store.backend(),
        settings.table_prefix
    );
    if settings.stream == StreamKind::Kinesis {
        let client = ingest::kinesis::client_from_env().await;
        ingest::kinesis::ensure_stream(&client, &settings.kinesis_stream, settings.kinesis_shards)
            .await?;
        println!("kinesis stream {:?} active", settings.kinesis_stream);
    }
    if settings.stream == StreamKind::Kafka {
        ingest::kafka::ensure_topic(&settings.kafka(), settings.kafka_partitions).await?;
        println!("kafka topic {:?} ready", settings.kafka_topic);
    }
    if settings.images_bucket.is_some() {
        let blobs = blobs(settings).await;
        blobs.create().await?;
        println!("image storage {} ready", blobs.describe());
    }
    Ok(())
}
