//! Recommendations for the storefront, and the model's admin view. The
//! shop's rules are applied at request time, on live state: no out-of-stock,
//! deleted, in-basket or (outside repeat categories) bought items, at most a
//! few items per category.

use std::collections::{BTreeMap, HashSet};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::HeaderMap,
    routing::get,
};
use domain::ProductId;
use serde::Serialize;
use serving::{
    attribution::Shown,
    model::Trained,
    rules::{self, Rules, Served},
};

use crate::{
    AppState,
    auth::MaybeCaller,
    error::{ApiError, ApiResult},
    routes::{basket::owner, params::Params},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/recommendations", get(recommendations))
        .route("/api/products/{id}/similar", get(similar))
        .route("/api/products/{id}/bought-together", get(bought_together))
        .route("/api/basket/suggestions", get(basket_suggestions))
        .route("/api/trending", get(trending))
}

/// One recommended product.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecommendedItem {
    pub product_id: String,
    pub name: String,
    pub category: String,
    /// Exact decimal, as a string.
    pub price: String,
    pub currency: String,
    /// Units available now.
    pub available: i64,
    /// The model's probability that this is the caller's next item (for
    /// popularity: the share of recent activity).
    pub score: f32,
    /// A short reason for a person.
    pub reason: String,
    /// The source behind it: `sequence`, `co-occurrence`, `embedding`,
    /// `bought-together`, `repeat`, `popularity`, `category` or `newest`.
    pub source: String,
    /// The response's id with this item's source
    /// (`{version}~{uuid}~{source}`): send it back on the events that
    /// follow a click on this item, for attribution per source.
    pub recommendation_id: String,
}

/// A list of recommendations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Recommendations {
    /// Send it back on the events that follow (`recommendation_id`): it
    /// names the model version (`{version}~{uuid}`), for attribution.
    pub recommendation_id: String,
    /// The model that ranked them; null when none is trained yet.
    pub model_version: Option<String>,
    /// Set when there is no model and popularity answered instead.
    pub fallback: Option<String>,
    pub items: Vec<RecommendedItem>,
}

impl RecommendedItem {
    fn from(s: Served) -> Self {
        Self {
            product_id: s.product.id.to_string(),
            name: s.product.name,
            category: s.product.category,
            price: s.product.price.amount().to_string(),
            currency: s.product.currency.to_string(),
            available: s.available,
            score: s.score,
            reason: s.reason,
            source: s.source.to_owned(),
            // Set by `answer`, which names the response.
            recommendation_id: String::new(),
        }
    }
}

/// The answer, with an id naming the model version (`{version}~{uuid}`) so
/// that the events which follow can be attributed to it; counts the
/// response and its impressions (`GET /api/analytics/recommendations`) and
/// the `shopstream_recommendations_served_total` metric under `endpoint`,
/// with the fallback the response names.
fn answer(
    state: &AppState,
    endpoint: &'static str,
    subject: Option<&str>,
    model: Option<&Trained>,
    fallback: Option<&'static str>,
    served: Vec<Served>,
) -> Recommendations {
    let version = model
        .map_or("popularity", |t| t.version.as_str())
        .to_owned();
    let now = domain::clock::now_ms() / 1000;
    let id = state.reco_ids.issue(&version, subject, None, now);
    let mut per_source: BTreeMap<&'static str, i64> = BTreeMap::new();
    let items: Vec<RecommendedItem> = served
        .into_iter()
        .map(|s| {
            *per_source.entry(s.source).or_default() += 1;
            let mut item = RecommendedItem::from(s);
            item.recommendation_id =
                state
                    .reco_ids
                    .issue(&version, subject, Some(&item.source), now);
            item
        })
        .collect();
    state.recs.impressions().count(Shown {
        version,
        per_source,
    });
    metrics::counter!("shopstream_recommendations_served_total",
        "endpoint" => endpoint, "fallback" => fallback.unwrap_or("none"))
    .increment(1);
    metrics::counter!("shopstream_recommendation_items_total", "endpoint" => endpoint)
        .increment(items.len() as u64);
    Recommendations {
        recommendation_id: id,
        model_version: model.map(|t| t.version.clone()),
        fallback: fallback.map(str::to_owned),
        items,
    }
}

async fn product_param(
    state: &AppState,
    field: &str,
    raw: &str,
) -> ApiResult<Option<domain::Product>> {
    let id = raw
        .parse::<ProductId>()
        .ok()
        .filter(|_| raw.len() == 36)
        .ok_or_else(|| ApiError::field(field, "must be a product id (a UUID)"))?;
    Ok(state.products.get(id).await?)
}

/// Personalised recommendations for the caller (user, or the anonymous
/// session of `X-Session-Id` / the session cookie).
#[utoipa::path(get, path = "/api/recommendations", tag = "recommendations",
    params(("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("context_product" = Option<String>, Query, description = "the product on screen (ignored when it no longer exists)"),
        ("category" = Option<String>, Query, description = "only this category")),
    responses((status = 200, body = Recommendations), (status = 422, body = crate::Problem)))]
pub async fn recommendations(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Recommendations>> {
    let mut p = Params::parse(q.as_deref())?;
    let limit = p.limit();
    let context = p.take("context_product");
    let category = p.name("category", crate::routes::params::NAME_PARAM_LEN);
    p.finish()?;
    // A product on screen that is gone (deleted since the page loaded) is
    // no context; a category with no product yields what it has: nothing.
    let context = match context {
        Some(raw) => product_param(&state, "context_product", &raw).await?,
        None => None,
    };
    let owner = owner(&caller, &headers, false)?;
    let (profile, basket) = match &owner {
        Some(o) => (
            state.tables.profile(&o.key).await?,
            state.shop.basket(&o.key).await?.lines,
        ),
        None => Default::default(),
    };
    let catalogue = state.recs.catalogue();
    let (history, exclude) = rules::personal(
        catalogue,
        &profile,
        basket.into_iter().map(|l| l.product_id),
        &state.config.recommend_repeat_categories,
        context.as_ref(),
    )
    .await?;
    let rules = Rules {
        exclude,
        category,
        per_category: state.config.recommend_per_category,
    };
    let subject = owner.as_ref().map(|o| o.key.as_str());
    let answer = recommend(
        &state,
        ("personal", subject),
        &history,
        context.as_ref(),
        rules,
        limit,
    );
    Ok(Json(answer.await?))
}

/// The model's candidates for `history`, then popularity, then the
/// category: the answer of the personal endpoints.
async fn recommend(
    state: &AppState,
    (endpoint, subject): (&'static str, Option<&str>),
    history: &[String],
    context: Option<&domain::Product>,
    rules: Rules,
    limit: usize,
) -> ApiResult<Recommendations> {
    let model = state.recs.current();
    let (catalogue, trained) = (state.recs.catalogue(), model.as_deref());
    let served = rules::recommend(catalogue, trained, history, context, rules, limit).await?;
    let fallback = model.is_none().then_some("popularity");
    Ok(answer(state, endpoint, subject, trained, fallback, served))
}

/// A request about one product (`/api/products/{id}/…`): its `limit`, the
/// product (404 if there is none), and rules that keep the product itself
/// out of the answer.
async fn about_product(
    state: &AppState,
    id: &str,
    query: Option<&str>,
) -> ApiResult<(usize, domain::Product, Rules)> {
    let mut p = Params::parse(query)?;
    let limit = p.limit();
    p.finish()?;
    let pid = id
        .parse::<ProductId>()
        .map_err(|_| ApiError::NotFound("product"))?;
    let product = state
        .products
        .get(pid)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    let rules = Rules {
        exclude: HashSet::from([id.to_owned()]),
        category: None,
        per_category: limit,
    };
    Ok((limit, product, rules))
}

/// Products like this one.
#[utoipa::path(get, path = "/api/products/{id}/similar", tag = "recommendations",
    params(("id" = String, Path), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Recommendations), (status = 404, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn similar(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Recommendations>> {
    let (limit, product, rules) = about_product(&state, &id, q.as_deref()).await?;
    let model = state.recs.current();
    let served = rules::similar(
        state.recs.catalogue(),
        model.as_deref(),
        &product,
        rules,
        limit,
    )
    .await?;
    // Without a model, every item comes from the product's category.
    let fallback = model.is_none().then_some("category");
    let owner = owner(&caller, &headers, false).ok().flatten();
    Ok(Json(answer(
        &state,
        "similar",
        owner.as_ref().map(|o| o.key.as_str()),
        model.as_deref(),
        fallback,
        served,
    )))
}

/// What customers bought together with a product (in one order, or one
/// customer's purchases within an hour), as of the last training; in stock
/// and not deleted. Empty until such purchases exist: no fallback.
#[utoipa::path(get, path = "/api/products/{id}/bought-together", tag = "recommendations",
    params(("id" = String, Path), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Recommendations), (status = 404, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn bought_together(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Recommendations>> {
    let (limit, _, rules) = about_product(&state, &id, q.as_deref()).await?;
    let model = state.recs.current();
    let served =
        rules::bought_together(state.recs.catalogue(), model.as_deref(), &id, &rules, limit)
            .await?;
    let owner = owner(&caller, &headers, false).ok().flatten();
    Ok(Json(answer(
        &state,
        "bought-together",
        owner.as_ref().map(|o| o.key.as_str()),
        model.as_deref(),
        None,
        served,
    )))
}

/// What goes with the basket: ranked from the basket's items, never one
/// already in it.
#[utoipa::path(get, path = "/api/basket/suggestions", tag = "recommendations",
    params(("limit" = Option<usize>, Query)),
    responses((status = 200, body = Recommendations), (status = 422, body = crate::Problem)))]
pub async fn basket_suggestions(
    State(state): State<AppState>,
    caller: MaybeCaller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Recommendations>> {
    let mut p = Params::parse(q.as_deref())?;
    let limit = p.limit();
    p.finish()?;
    let owner = owner(&caller, &headers, false)?;
    let basket: Vec<String> = match &owner {
        Some(o) => state
            .shop
            .basket(&o.key)
            .await?
            .lines
            .iter()
            .map(|l| l.product_id.clone())
            .collect(),
        None => Vec::new(),
    };
    let rules = Rules {
        exclude: basket.iter().cloned().collect(),
        category: None,
        per_category: state.config.recommend_per_category,
    };
    Ok(Json(
        recommend(
            &state,
            ("basket", owner.as_ref().map(|o| o.key.as_str())),
            &basket,
            None,
            rules,
            limit,
        )
        .await?,
    ))
}

/// One trending product, for the storefront.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Trending {
    pub window: String,
    pub items: Vec<RecommendedItem>,
}

/// What is hot now, in stock, optionally in one category.
#[utoipa::path(get, path = "/api/trending", tag = "recommendations",
    params(("window" = Option<String>, Query, description = "`1h` (default) or `24h`"),
        ("category" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Trending), (status = 422, body = crate::Problem)))]
pub async fn trending(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Trending>> {
    let mut p = Params::parse(q.as_deref())?;
    let (window, name) = p.window();
    let category = p.name("category", crate::routes::params::NAME_PARAM_LEN);
    let limit = p.limit();
    p.finish()?;
    let catalogue = state.recs.catalogue();
    let candidates = rules::trending(catalogue, window, 500).await?;
    let rules = Rules {
        exclude: HashSet::new(),
        category,
        per_category: limit,
    };
    let items = rules::apply(
        &candidates,
        &rules,
        limit,
        &mut rules::Reads::new(catalogue),
    )
    .await?
    .into_iter()
    .map(RecommendedItem::from)
    .collect();
    Ok(Json(Trending {
        window: name.to_owned(),
        items,
    }))
}
