//! Blob storage for product images: a directory on disk (the default) or an
//! S3 bucket (`images_bucket`), behind one small port.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::{StoreError, StoreResult};

/// Where blobs are kept.
#[async_trait]
pub trait Blobs: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `bytes` under `key`, replacing what was there.
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StoreResult<()>;
    /// The bytes under `key`, if any.
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Creates the container (bucket, directory) if missing. Idempotent.
    async fn create(&self) -> StoreResult<()>;
    fn describe(&self) -> String;
}

/// Files under a directory (written whole, then renamed into place).
#[derive(Debug)]
pub struct DirBlobs {
    pub dir: PathBuf,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("blob storage: {e}"))
}

#[async_trait]
impl Blobs for DirBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> StoreResult<()> {
        let path = self.dir.join(key);
        let dir = path.parent().unwrap_or(&self.dir).to_owned();
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        let tmp = dir.join(format!(".{}.tmp", uuid_like()));
        tokio::fs::write(&tmp, bytes).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        match tokio::fs::read(self.dir.join(key)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn create(&self) -> StoreResult<()> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.dir.display())
    }
}

fn uuid_like() -> String {
    format!("{:x}", rand::random::<u64>())
}

/// Objects in an S3 bucket.
#[derive(Debug)]
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Blobs {
    /// A client from the environment's AWS configuration. With a custom
    /// endpoint (LocalStack, moto) buckets are addressed by path.
    pub async fn from_env(bucket: String) -> Self {
        let config = aws_config::load_from_env().await;
        let custom = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(custom)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket,
        }
    }
}

fn s3_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("S3: {e}"))
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StoreResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(bytes.into())
            .send()
            .await
            .map(drop)
            .map_err(|e| s3_err(aws_sdk_s3::error::DisplayErrorContext(e)))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.body
                    .collect()
                    .await
                    .map_err(s3_err)?
                    .into_bytes()
                    .to_vec(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_err(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    async fn create(&self) -> StoreResult<()> {
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(s3_err(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}
