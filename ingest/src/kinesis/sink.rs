//! The producer: `PutRecords` in batches within the API's limits, retrying
//! the records a partial failure left behind.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::{Client, primitives::Blob, types::PutRecordsRequestEntry};

use super::{backoff, describe};
use crate::{EventSink, PublishError};

/// Publishes events with `PutRecords`: up to 500 records or 5 MiB a call,
/// each with its partition key; records the service refused are sent again
/// (only those) with jittered backoff.
#[derive(Clone, Debug)]
pub struct KinesisSink {
    pub client: Client,
    pub stream: String,
}

const PUT_MAX_RECORDS: usize = 500;
const PUT_MAX_BYTES: usize = 5 * 1024 * 1024;
const PUT_ATTEMPTS: u32 = 10;

impl KinesisSink {
    pub fn new(client: Client, stream: impl Into<String>) -> Self {
        Self {
            client,
            stream: stream.into(),
        }
    }

    /// Sends (partition key, data) records. All are durably in the stream
    /// when this returns `Ok`.
    pub async fn put(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && end - start < PUT_MAX_RECORDS
                && (end == start
                    || bytes + records[end].0.len() + records[end].1.len() <= PUT_MAX_BYTES)
            {
                bytes += records[end].0.len() + records[end].1.len();
                end += 1;
            }
            self.put_chunk(&records[start..end]).await?;
            start = end;
        }
        Ok(())
    }

    async fn put_chunk(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        let mut left: Vec<usize> = (0..records.len()).collect();
        let mut attempt = 0;
        let mut last_error = String::new();
        while !left.is_empty() {
            if attempt == PUT_ATTEMPTS {
                return Err(PublishError::Stream(format!(
                    "{} of {} records not accepted by {} after {PUT_ATTEMPTS} attempts: {last_error}",
                    left.len(),
                    records.len(),
                    self.stream
                )));
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(Duration::from_millis(100), attempt)).await;
            }
            attempt += 1;
            let entries = left
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&records[i].0)
                        .data(Blob::new(records[i].1.clone()))
                        .build()
                        .map_err(|e| PublishError::Stream(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            match self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) if out.failed_record_count().unwrap_or(0) == 0 => return Ok(()),
                Ok(out) => {
                    let failed: Vec<usize> = out
                        .records()
                        .iter()
                        .zip(&left)
                        .filter(|(r, _)| r.error_code().is_some())
                        .map(|(r, &i)| {
                            last_error = r.error_code().unwrap_or_default().to_owned();
                            i
                        })
                        .collect();
                    metrics::counter!("shopstream_kinesis_put_retried_total", "stream" => self.stream.clone())
                        .increment(failed.len() as u64);
                    left = failed;
                }
                Err(e) => last_error = describe(&e),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventSink for KinesisSink {
    #[tracing::instrument(name = "stream.publish", skip_all, fields(records = records.len()), err(level = "debug"))]
    async fn publish_raw(&self, records: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        self.put(records).await
    }

    fn describe(&self) -> String {
        format!("kinesis:{}", self.stream)
    }
}
