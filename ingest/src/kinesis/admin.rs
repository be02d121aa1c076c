//! The stream itself: create it, wait until it is active, list its shards.

use std::time::Duration;

use aws_sdk_kinesis::{
    Client,
    error::ProvideErrorMetadata,
    types::{Shard, StreamStatus},
};

use super::{KinesisError, backoff, is_throttle};

/// Creates the stream with `shards` shards unless it exists, and waits
/// until it is active.
pub async fn ensure_stream(client: &Client, stream: &str, shards: i32) -> Result<(), KinesisError> {
    match client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(KinesisError::api("CreateStream", &e)),
    }
    wait_active(client, stream).await
}

/// Waits until the stream is `ACTIVE` (after a create, split or merge).
pub async fn wait_active(client: &Client, stream: &str) -> Result<(), KinesisError> {
    for _ in 0..600 {
        let out = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await;
        if let Ok(out) = out
            && out.stream_description_summary().map(|s| &s.stream_status)
                == Some(&StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KinesisError::NotActive(stream.to_owned()))
}

/// Every shard of the stream, through as many `ListShards` pages as it takes.
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>, KinesisError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    let mut attempt = 0;
    loop {
        // With a page token the stream name must not be given.
        let request = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        match request.send().await {
            Ok(out) => {
                shards.extend(out.shards().iter().cloned());
                match out.next_token() {
                    Some(t) => token = Some(t.to_owned()),
                    None => return Ok(shards),
                }
            }
            Err(e) if is_throttle(e.code()) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(backoff(Duration::from_millis(200), attempt)).await;
            }
            // A page token lapses after 300 s; start again.
            Err(e) if e.code() == Some("ExpiredNextTokenException") && token.is_some() => {
                shards.clear();
                token = None;
            }
            Err(e) => return Err(KinesisError::api("ListShards", &e)),
        }
    }
}
