//! [`Tables`]: the tables the pipeline writes, as typed reads (and the two
//! small writes the API makes to them), for callers that must not reach the
//! raw store.

use std::sync::Arc;

use storage::{Store, StoreError};
use time::{Duration, OffsetDateTime};

use crate::{
    pipeline,
    read::{self, AttributionRow},
    state::{Alert, Counters, DeadLetter, Profile, Stock},
};

/// A handle on the pipeline's tables; cheap to clone.
#[derive(Clone, Debug)]
pub struct Tables {
    store: Arc<dyn Store>,
    trending: read::TrendingLists,
}

impl Tables {
    /// `trending`: the lists shared with the other readers of trending.
    pub fn new(store: Arc<dyn Store>, trending: read::TrendingLists) -> Self {
        Self { store, trending }
    }

    /// See [`read::stock`].
    pub async fn stock(&self, product_id: &str) -> Result<Option<Stock>, StoreError> {
        read::stock(self.store.as_ref(), product_id).await
    }

    /// See [`read::stock_page`].
    pub async fn stock_page(
        &self,
        limit: usize,
        cursor: Option<String>,
        below_threshold: bool,
    ) -> Result<(Vec<(String, Stock)>, Option<String>), StoreError> {
        read::stock_page(self.store.as_ref(), limit, cursor, below_threshold).await
    }

    /// See [`read::minutes`].
    pub async fn minutes(
        &self,
        now: OffsetDateTime,
        minutes: i64,
    ) -> Result<Vec<(String, Counters)>, StoreError> {
        read::minutes(self.store.as_ref(), now, minutes).await
    }

    /// See [`read::product_hours`].
    pub async fn product_hours(
        &self,
        product_id: &str,
        now: OffsetDateTime,
        hours: i64,
    ) -> Result<Vec<(String, Counters)>, StoreError> {
        read::product_hours(self.store.as_ref(), product_id, now, hours).await
    }

    /// See [`read::TrendingLists::get`]: as of a few seconds ago.
    pub async fn trending(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(String, Counters)>, StoreError> {
        self.trending.get(window, limit).await
    }

    /// See [`read::profile`].
    pub async fn profile(&self, subject: &str) -> Result<Profile, StoreError> {
        read::profile(self.store.as_ref(), subject).await
    }

    /// See [`read::alerts`].
    pub async fn alerts(
        &self,
        supplier_id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<Alert>, Option<String>), StoreError> {
        read::alerts(self.store.as_ref(), supplier_id, limit, cursor).await
    }

    /// See [`read::attribution`].
    pub async fn attribution(&self) -> Result<Vec<AttributionRow>, StoreError> {
        read::attribution(self.store.as_ref()).await
    }

    /// See [`read::dead_letters`].
    pub async fn dead_letters(
        &self,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<(String, DeadLetter)>, Option<String>), StoreError> {
        read::dead_letters(self.store.as_ref(), limit, cursor).await
    }

    /// See [`pipeline::acknowledge_alert`].
    pub async fn acknowledge_alert(
        &self,
        supplier_id: &str,
        id: &str,
    ) -> Result<Option<Alert>, StoreError> {
        pipeline::acknowledge_alert(self.store.as_ref(), supplier_id, id).await
    }

    /// See [`pipeline::merge_profiles`].
    pub async fn merge_profiles(&self, session: &str, user: &str) -> Result<bool, StoreError> {
        pipeline::merge_profiles(self.store.as_ref(), session, user).await
    }
}
