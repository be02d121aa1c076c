//! Product search: ranked, typo-tolerant full text with category counts and
//! filters, from the instance's own index (see the `search` crate).

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    routing::get,
};
use domain::Product;
use rust_decimal::{Decimal, prelude::ToPrimitive};
use search::{SearchError, SearchRequest, index::MAX_OFFSET};
use serde::Serialize;

use crate::{
    AppState,
    error::{ApiError, ApiResult},
    routes::params::{NAME_PARAM_LEN, Params},
};

/// The longest query.
pub const QUERY_LEN: usize = 200;
/// A price bound: a decimal in the currency's major unit.
pub const PRICE_PATTERN: &str = r"^[0-9]{1,12}(\.[0-9]{1,8})?$";

pub fn router() -> Router<AppState> {
    Router::new().route("/api/search", get(search))
}

/// One product found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub product: Product,
    /// Whether stock is available to sell, as the index last heard.
    pub in_stock: bool,
    /// How well it matched; higher is better, 0 without a query.
    pub score: f32,
}

/// How many matches a category has.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryCount {
    pub category: String,
    pub count: u64,
}

/// A page of search results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    pub items: Vec<SearchHit>,
    /// How many products match in all.
    pub total: usize,
    /// The matches per category (the filters applied, `category` too), most first.
    pub categories: Vec<CategoryCount>,
    /// No product has every word of `q`: these have some of them.
    pub relaxed: bool,
    /// Pass as `offset` for the next page; absent on the last one (or
    /// past the deepest offset, 1,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

fn price(params: &mut Params, name: &'static str) -> Option<f64> {
    let v = params.take(name)?;
    let (whole, fraction) = v.split_once('.').unwrap_or((&v, "0"));
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<Decimal>() {
        Ok(d) if digits(whole, 12) && digits(fraction, 8) => d.to_f64(),
        _ => {
            params
                .errors
                .push(name, "must be a decimal number of at least 0, e.g. 19.99");
            None
        }
    }
}

fn offset(params: &mut Params) -> usize {
    match params.take("offset").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) if n <= MAX_OFFSET => n,
        Some(_) => {
            params.errors.push(
                "offset",
                format!("must be a whole number from 0 to {MAX_OFFSET}"),
            );
            0
        }
    }
}

/// Searches the catalogue: every word of `q` in the name, category,
/// attributes or description, a typo or two allowed (one edit in words of
/// 4 to 7 letters, two in longer ones), the last word also as a prefix
/// (search as you type). Best match first; without `q`, newest first.
/// Follows the catalogue and the stock within a moment of each change.
#[utoipa::path(get, path = "/api/search", tag = "products",
    params(
        ("q" = Option<String>, Query, description = "the words to find, up to 200 characters (the first 12 words count)"),
        ("category" = Option<String>, Query, description = "only this category"),
        ("supplier_id" = Option<String>, Query),
        ("in_stock" = Option<bool>, Query, description = "only products with (`true`) or without (`false`) stock available"),
        ("min_price" = Option<String>, Query, description = "lowest price, inclusive, a decimal in the product's currency"),
        ("max_price" = Option<String>, Query, description = "highest price, inclusive"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("offset" = Option<usize>, Query, description = "0 to 1000: how many matches to skip (`next_offset` of the previous page)"),
    ),
    responses((status = 200, body = SearchPage), (status = 422, body = crate::Problem),
        (status = 503, body = crate::Problem, description = "the index is being built at start-up (with Retry-After)")))]
pub async fn search(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<SearchPage>> {
    let mut params = Params::parse(query.as_deref())?;
    let q = params.take("q").unwrap_or_default();
    if q.chars().count() > QUERY_LEN {
        params
            .errors
            .push("q", format!("must be at most {QUERY_LEN} characters"));
    }
    let in_stock = match params.take("in_stock").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            params.errors.push("in_stock", "must be true or false");
            None
        }
    };
    let request = SearchRequest {
        q,
        category: params.name("category", NAME_PARAM_LEN),
        supplier_id: params.name("supplier_id", NAME_PARAM_LEN),
        in_stock,
        min_price: price(&mut params, "min_price"),
        max_price: price(&mut params, "max_price"),
        limit: params.limit(),
        offset: offset(&mut params),
    };
    if let (Some(lo), Some(hi)) = (request.min_price, request.max_price)
        && lo > hi
    {
        params
            .errors
            .push("max_price", "must be at least min_price");
    }
    params.finish()?;
    let index = state.search.clone();
    let (limit, offset) = (request.limit, request.offset);
    let found = tokio::task::spawn_blocking(move || index.search(&request))
        .await
        .map_err(|e| ApiError::Internal(format!("search panicked: {e}")))?
        .map_err(|e| match e {
            SearchError::NotReady => ApiError::Busy {
                detail: e.to_string(),
                retry_after: std::time::Duration::from_secs(1),
            },
            e => ApiError::Internal(e.to_string()),
        })?;
    // Each product as the catalogue has it now (from the read cache that
    // this instance's writes update at once): the index may trail a write
    // by the pipeline's delay, a hit never shows an older version. One
    // deleted meanwhile is left out.
    use futures::{StreamExt, TryStreamExt};
    let ids: Vec<_> = found.hits.iter().map(|h| h.id).collect();
    let products: Vec<Option<Product>> = futures::stream::iter(ids)
        .map(|id| {
            let products = state.products.clone();
            async move { products.get_cached(id).await }
        })
        .buffered(8)
        .try_collect()
        .await?;
    let items = found
        .hits
        .iter()
        .zip(products)
        .filter_map(|(h, p)| {
            Some(SearchHit {
                product: p?,
                in_stock: h.in_stock,
                score: h.score,
            })
        })
        .collect();
    let next = offset + limit;
    Ok(Json(SearchPage {
        next_offset: (next < found.total && next <= MAX_OFFSET).then_some(next),
        items,
        total: found.total,
        categories: found
            .categories
            .into_iter()
            .map(|(category, count)| CategoryCount { category, count })
            .collect(),
        relaxed: found.relaxed,
    }))
}
