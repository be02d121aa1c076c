//! Recommendations for the storefront, and the model's admin view. The
//! shop's rules are applied at request time, on live state: no out-of-stock,
//! deleted, in-basket or (outside repeat categories) bought items, at most a
//! few items per category.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::HeaderMap,
    routing::{get, post},
};
use domain::{ProductId, Role};
use processors::{read, state::Profile};
use serde::Serialize;
use storage::from_item;
use time::{Duration, OffsetDateTime};

use crate::{
    AppState,
    auth::{Caller, MaybeCaller},
    error::{ApiError, ApiResult},
    recs::{self, Candidate, Why},
    routes::{basket::owner, params::Params},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/recommendations", get(recommendations))
        .route("/api/products/{id}/similar", get(similar))
        .route("/api/products/{id}/bought-together", get(bought_together))
        .route("/api/basket/suggestions", get(basket_suggestions))
        .route("/api/trending", get(trending))
        .route("/api/admin/model", get(model_info))
        .route("/api/admin/model/train", post(train))
        .route("/api/analytics/recommendations", get(attribution))
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
    /// `bought-together`, `repeat`, `popularity` or `category`.
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

struct Rules {
    exclude: HashSet<String>,
    category: Option<String>,
    per_category: usize,
}

/// The caller's behaviour profile (user or session), if any.
async fn profile_of(state: &AppState, key: &str) -> ApiResult<Profile> {
    Ok(
        match state
            .store
            .get(
                storage::Table::Behaviour,
                &processors::state::profile_key(key),
            )
            .await?
        {
            Some(item) => from_item(item)?,
            None => Profile::default(),
        },
    )
}

fn ratio(n: f64, d: f64) -> f32 {
    if d > 0.0 { (n / d) as f32 } else { 0.0 }
}

/// Popular products now (1 h, then 24 h), as candidates.
async fn popular(state: &AppState) -> ApiResult<Vec<Candidate>> {
    let now = OffsetDateTime::now_utc();
    let mut out: Vec<Candidate> = Vec::new();
    for window in [Duration::hours(1), Duration::hours(24)] {
        let ranked = read::trending(state.store.as_ref(), now, window, 200).await?;
        let total: f64 = ranked
            .iter()
            .map(|(_, c)| (c.purchases * 10 + c.basket_adds * 3 + c.views) as f64)
            .sum();
        for (id, c) in ranked {
            if !out.iter().any(|x| x.product_id == id) {
                out.push(Candidate {
                    product_id: id,
                    category_hint: None,
                    score: ratio(
                        (c.purchases * 10 + c.basket_adds * 3 + c.views) as f64,
                        total,
                    ),
                    reason: Why::Popular,
                });
            }
        }
    }
    Ok(out)
}

/// The category's 100 newest products, nearest in price first (newest
/// first without a price): how a product with no interactions yet is found.
async fn in_category(
    state: &AppState,
    category: &str,
    price: Option<rust_decimal::Decimal>,
) -> ApiResult<Vec<Candidate>> {
    let mut list = state.products.newest_in_category(category, 100).await?;
    if let Some(p) = price {
        // Stable: equally near, the newer first.
        list.sort_by_key(|x| (x.price.amount() - p).abs());
    }
    Ok(list
        .into_iter()
        .map(|x| Candidate {
            product_id: x.id.to_string(),
            category_hint: Some(std::sync::Arc::from(x.category.as_str())),
            score: 0.0,
            reason: Why::Category(category.to_owned()),
        })
        .collect())
}

/// What one request has read: products (`None`: not in the catalogue) and
/// their availability, so that asking the model for more candidates, or
/// naming an item in a reason, never reads the same thing twice.
#[derive(Default)]
struct Reads {
    products: HashMap<String, Option<std::sync::Arc<domain::Product>>>,
    available: HashMap<String, i64>,
}

/// The most model candidates the rules go through for one answer.
const MAX_CANDIDATES: usize = 2000;

/// How many candidates' products are read at once (concurrently: on DynamoDB
/// each read is a round trip).
const READ_AHEAD: usize = 16;

impl Reads {
    /// Reads the products of `ids` not read yet, concurrently.
    async fn products(&mut self, state: &AppState, ids: &[&str]) -> ApiResult<()> {
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !self.products.contains_key(*id))
            .collect();
        let got = futures::future::try_join_all(missing.iter().map(|id| async move {
            match id.parse::<ProductId>() {
                Ok(pid) => state.products.get(pid).await,
                Err(_) => Ok(None),
            }
        }))
        .await?;
        for (id, p) in missing.into_iter().zip(got) {
            self.products
                .insert(id.to_owned(), p.map(std::sync::Arc::new));
        }
        Ok(())
    }

    async fn product(
        &mut self,
        state: &AppState,
        id: &str,
    ) -> ApiResult<Option<std::sync::Arc<domain::Product>>> {
        self.products(state, &[id]).await?;
        Ok(self.products.get(id).cloned().flatten())
    }

    async fn available(&mut self, state: &AppState, id: &str) -> ApiResult<i64> {
        if let Some(n) = self.available.get(id) {
            return Ok(*n);
        }
        let n = read::stock(state.store.as_ref(), id)
            .await?
            .map_or(0, |s| s.available);
        self.available.insert(id.to_owned(), n);
        Ok(n)
    }

    async fn name(&mut self, state: &AppState, id: &str) -> String {
        match self.product(state, id).await {
            Ok(Some(p)) => p.name.clone(),
            _ => "a product".to_owned(),
        }
    }
}

/// Applies the live rules to candidates in order until `limit` are kept.
async fn apply(
    state: &AppState,
    candidates: Vec<Candidate>,
    rules: &Rules,
    limit: usize,
    reads: &mut Reads,
) -> ApiResult<Vec<RecommendedItem>> {
    let mut out = Vec::new();
    let mut per_category: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    // A candidate whose category (as the model knew it) is already full, or
    // is not the one asked for, is skipped without reading its product.
    let hinted_out = |c: &Candidate, per_category: &HashMap<String, usize>| {
        c.category_hint.as_deref().is_some_and(|k| {
            rules.category.as_ref().is_some_and(|want| want != k)
                || per_category.get(k).copied().unwrap_or(0) >= rules.per_category
        })
    };
    let mut read_to = 0;
    for (i, c) in candidates.iter().enumerate() {
        if out.len() >= limit {
            break;
        }
        if rules.exclude.contains(&c.product_id)
            || hinted_out(c, &per_category)
            || !seen.insert(c.product_id.as_str())
        {
            continue;
        }
        if i >= read_to {
            // Read this product and the next few that may be kept, at once.
            let mut ahead = Vec::with_capacity(READ_AHEAD);
            let mut j = i;
            while j < candidates.len() && ahead.len() < READ_AHEAD {
                let d = &candidates[j];
                if !rules.exclude.contains(&d.product_id) && !hinted_out(d, &per_category) {
                    ahead.push(d.product_id.as_str());
                }
                j += 1;
            }
            read_to = j;
            reads.products(state, &ahead).await?;
        }
        // Deleted products are gone from the catalogue.
        let Some(p) = reads.product(state, &c.product_id).await? else {
            continue;
        };
        if rules.category.as_ref().is_some_and(|k| *k != p.category) {
            continue;
        }
        if per_category.get(&p.category).copied().unwrap_or(0) >= rules.per_category {
            continue;
        }
        let available = reads.available(state, &c.product_id).await?;
        if available <= 0 {
            continue;
        }
        *per_category.entry(p.category.clone()).or_default() += 1;
        let reason = match &c.reason {
            Why::After(x) => format!("viewed after {}", reads.name(state, x).await),
            Why::With(x) => format!("viewed together with {}", reads.name(state, x).await),
            Why::Like(x) => format!("similar to {}", reads.name(state, x).await),
            Why::Bought(x) => format!("often bought with {}", reads.name(state, x).await),
            Why::Again => "you bought it before".to_owned(),
            Why::Popular => "popular right now".to_owned(),
            Why::Category(k) => format!("new in {k}"),
        };
        out.push(RecommendedItem {
            product_id: p.id.to_string(),
            name: p.name.clone(),
            category: p.category.clone(),
            price: p.price.amount().to_string(),
            currency: p.currency.to_string(),
            available,
            score: c.score,
            reason,
            source: c.reason.source().to_owned(),
            // Set by `answer`, which names the response.
            recommendation_id: String::new(),
        });
    }
    Ok(out)
}

/// Model candidates (asking for more when the rules drop many), then
/// popularity, then the context's category, until `limit` are kept.
async fn recommend(
    state: &AppState,
    history: &[String],
    context: Option<&domain::Product>,
    rules: Rules,
    limit: usize,
    endpoint: &'static str,
) -> ApiResult<Recommendations> {
    let model = state.recs.current();
    let mut reads = Reads::default();
    let mut items: Vec<RecommendedItem> = Vec::new();
    let mut rules = rules;
    if let Some(t) = &model {
        // Ranking scores every candidate whatever the cut, so rank once;
        // the rules go through a growing prefix until `limit` are kept
        // (what they read is kept in `reads`, so going again is cheap).
        let ranked = recs::rank(t, history, MAX_CANDIDATES, &rules.exclude);
        let mut want = (limit * 4 + 20).min(ranked.len());
        loop {
            let cands = ranked[..want]
                .iter()
                .map(|s| recs::candidate(t, s))
                .collect();
            items = apply(state, cands, &rules, limit, &mut reads).await?;
            if items.len() >= limit || want == ranked.len() {
                break;
            }
            want = (want * 4).min(ranked.len());
        }
    }
    for kept in &items {
        rules.exclude.insert(kept.product_id.clone());
    }
    if items.len() < limit {
        let more = apply(
            state,
            popular(state).await?,
            &rules,
            limit - items.len(),
            &mut reads,
        )
        .await?;
        for kept in &more {
            rules.exclude.insert(kept.product_id.clone());
        }
        items.extend(more);
    }
    let category = rules
        .category
        .clone()
        .or_else(|| context.map(|p| p.category.clone()));
    if items.len() < limit
        && let Some(k) = category
    {
        let cands = in_category(state, &k, context.map(|p| p.price.amount())).await?;
        items.extend(apply(state, cands, &rules, limit - items.len(), &mut reads).await?);
    }
    let fallback = model.is_none().then(|| "popularity".to_owned());
    metrics::counter!("shopstream_recommendations_served_total",
        "endpoint" => endpoint,
        "fallback" => if fallback.is_some() { "popularity" } else { "none" })
    .increment(1);
    metrics::counter!("shopstream_recommendation_items_total", "endpoint" => endpoint)
        .increment(items.len() as u64);
    Ok(answer(state, model.as_deref(), fallback.as_deref(), items))
}

/// The answer, with an id naming the model version (`{version}~{uuid}`) so
/// that the events which follow can be attributed to it; counts the
/// response and its impressions for `GET /api/analytics/recommendations`.
fn answer(
    state: &AppState,
    model: Option<&recs::Trained>,
    fallback: Option<&str>,
    mut items: Vec<RecommendedItem>,
) -> Recommendations {
    let version = model
        .map_or("popularity", |t| t.version.as_str())
        .to_owned();
    let id = format!("{version}~{}", uuid::Uuid::now_v7());
    let mut per_source: BTreeMap<String, i64> = BTreeMap::new();
    for item in &mut items {
        item.recommendation_id = format!("{id}~{}", item.source);
        *per_source.entry(item.source.clone()).or_default() += 1;
    }
    let store = state.store.clone();
    let shown = items.len() as i64;
    // Off the request path: a lost impression count costs less than latency.
    tokio::spawn(async move {
        use processors::state::reco_key;
        use storage::{Table, Update};
        let mut writes = vec![(
            reco_key(&version, None),
            vec![
                Update::add("responses", 1),
                Update::add("impressions", shown),
            ],
        )];
        for (source, n) in per_source {
            writes.push((
                reco_key(&version, Some(&source)),
                vec![Update::add("impressions", n)],
            ));
        }
        for (key, updates) in writes {
            if let Err(e) = store.update(Table::Analytics, &key, updates, None).await {
                tracing::debug!(error = %e, "impression count lost");
            }
        }
    });
    Recommendations {
        recommendation_id: id,
        model_version: model.map(|t| t.version.clone()),
        fallback: fallback.map(str::to_owned),
        items,
    }
}

fn per_category(state: &AppState) -> usize {
    state.config.recommend_per_category
}

async fn product_param(state: &AppState, field: &str, raw: &str) -> ApiResult<domain::Product> {
    let id = raw
        .parse::<ProductId>()
        .map_err(|_| ApiError::field(field, "must be a product id (a UUID)"))?;
    state
        .products
        .get(id)
        .await?
        .ok_or_else(|| ApiError::field(field, format!("no product {raw}")))
}

/// Personalised recommendations for the caller (user, or the anonymous
/// session of `X-Session-Id` / the session cookie).
#[utoipa::path(get, path = "/api/recommendations", tag = "recommendations",
    params(("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("context_product" = Option<String>, Query, description = "the product on screen"),
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
    let category = p.take("category");
    p.finish()?;
    let context = match context {
        Some(raw) => Some(product_param(&state, "context_product", &raw).await?),
        None => None,
    };
    if let Some(k) = &category {
        let (known, _) = state
            .products
            .list(
                &storage::products::ProductFilter {
                    category: Some(k.clone()),
                    ..Default::default()
                },
                1,
                None,
            )
            .await?;
        if known.is_empty() {
            return Err(ApiError::field("category", format!("no category {k}")));
        }
    }
    let who = owner(&caller, &headers, false)?;
    let (mut history, bought, basket) = match &who {
        Some(o) => {
            let profile = profile_of(&state, &o.key).await?;
            let (history, bought) = recs::history_of(&profile);
            let basket = state.shop.basket(&o.key).await?;
            (
                history,
                bought,
                basket
                    .lines
                    .iter()
                    .map(|l| l.product_id.clone())
                    .collect::<Vec<_>>(),
            )
        }
        None => (Vec::new(), HashSet::new(), Vec::new()),
    };
    let mut exclude: HashSet<String> = history.iter().cloned().collect();
    exclude.extend(basket);
    let repeat = &state.config.recommend_repeat_categories;
    if repeat.is_empty() {
        exclude.extend(bought);
    } else {
        // Bought items come back only in repeat categories (groceries).
        for b in bought {
            let keep = match b.parse::<ProductId>() {
                Ok(id) => state
                    .products
                    .get(id)
                    .await?
                    .is_some_and(|p| repeat.contains(&p.category)),
                Err(_) => false,
            };
            if keep {
                exclude.remove(&b);
            } else {
                exclude.insert(b);
            }
        }
    }
    if let Some(c) = &context {
        // The page on screen is the newest thing in the history.
        history.push(c.id.to_string());
        exclude.insert(c.id.to_string());
    }
    let rules = Rules {
        exclude,
        category,
        per_category: per_category(&state),
    };
    Ok(Json(
        recommend(&state, &history, context.as_ref(), rules, limit, "personal").await?,
    ))
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
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Recommendations>> {
    let (limit, product, rules) = about_product(&state, &id, q.as_deref()).await?;
    let model = state.recs.current();
    let mut reads = Reads::default();
    let mut items = match &model {
        Some(t) => apply(&state, recs::similar(t, &id), &rules, limit, &mut reads).await?,
        None => Vec::new(),
    };
    if items.len() < limit {
        let mut rules = rules;
        rules
            .exclude
            .extend(items.iter().map(|i| i.product_id.clone()));
        let cands = in_category(&state, &product.category, Some(product.price.amount())).await?;
        items.extend(apply(&state, cands, &rules, limit - items.len(), &mut reads).await?);
    }
    metrics::counter!("shopstream_recommendations_served_total",
        "endpoint" => "similar", "fallback" => if model.is_some() { "none" } else { "popularity" })
    .increment(1);
    let fallback = model.is_none().then_some("category");
    Ok(Json(answer(&state, model.as_deref(), fallback, items)))
}

/// What customers bought together with a product (in one order, or one
/// customer's purchases within an hour), as of the last training; in stock
/// and not deleted. Empty until such purchases exist: no fallback.
#[utoipa::path(get, path = "/api/products/{id}/bought-together", tag = "recommendations",
    params(("id" = String, Path), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Recommendations), (status = 404, body = crate::Problem), (status = 422, body = crate::Problem)))]
pub async fn bought_together(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Recommendations>> {
    let (limit, _, rules) = about_product(&state, &id, q.as_deref()).await?;
    let model = state.recs.current();
    let mut reads = Reads::default();
    let items = match &model {
        Some(t) => apply(&state, recs::bought_with(t, &id), &rules, limit, &mut reads).await?,
        None => Vec::new(),
    };
    metrics::counter!("shopstream_recommendations_served_total",
        "endpoint" => "bought-together", "fallback" => "none")
    .increment(1);
    Ok(Json(answer(&state, model.as_deref(), None, items)))
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
    let basket: Vec<String> = match owner(&caller, &headers, false)? {
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
        per_category: per_category(&state),
    };
    Ok(Json(
        recommend(&state, &basket, None, rules, limit, "basket").await?,
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
    let (window, name) = match p.take("window").as_deref() {
        None | Some("1h") => (Duration::hours(1), "1h"),
        Some("24h") => (Duration::hours(24), "24h"),
        Some(_) => {
            p.errors.push("window", "must be 1h or 24h");
            (Duration::hours(1), "1h")
        }
    };
    let category = p.take("category");
    let limit = p.limit();
    p.finish()?;
    let ranked =
        read::trending(state.store.as_ref(), OffsetDateTime::now_utc(), window, 500).await?;
    let total: f64 = ranked
        .iter()
        .map(|(_, c)| (c.purchases * 10 + c.basket_adds * 3 + c.views) as f64)
        .sum();
    let cands = ranked
        .into_iter()
        .map(|(id, c)| Candidate {
            product_id: id,
            category_hint: None,
            score: ratio(
                (c.purchases * 10 + c.basket_adds * 3 + c.views) as f64,
                total,
            ),
            reason: Why::Popular,
        })
        .collect();
    let rules = Rules {
        exclude: HashSet::new(),
        category,
        per_category: limit,
    };
    let items = apply(&state, cands, &rules, limit, &mut Reads::default()).await?;
    Ok(Json(Trending {
        window: name.to_owned(),
        items,
    }))
}

/// The model being served.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// False until a model was trained (popularity answers meanwhile).
    pub trained: bool,
    pub version: Option<String>,
    pub trained_at: Option<String>,
    pub training_ms: Option<u64>,
    pub interactions: Option<usize>,
    pub subjects: Option<usize>,
    pub items: Option<usize>,
    /// The ranker's training: targets, candidate recall, feature weights.
    #[schema(value_type = Object)]
    pub report: Option<serde_json::Value>,
}

fn info(t: Option<&recs::Trained>) -> ModelInfo {
    ModelInfo {
        trained: t.is_some(),
        version: t.map(|t| t.version.clone()),
        trained_at: t.map(|t| t.trained_at.clone()),
        training_ms: t.map(|t| t.training_ms),
        interactions: t.map(|t| t.interactions),
        subjects: t.map(|t| t.subjects),
        items: t.map(|t| t.items.len()),
        report: t.and_then(|t| serde_json::to_value(&t.report).ok()),
    }
}

/// The model version, its training and its data (admin).
#[utoipa::path(get, path = "/api/admin/model", tag = "recommendations", security(("bearer" = [])),
    responses((status = 200, body = ModelInfo), (status = 403, body = crate::Problem)))]
pub async fn model_info(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ModelInfo>> {
    caller.require(Role::Admin)?;
    Ok(Json(info(state.recs.current().as_deref())))
}

/// Trains a model now on the interaction log and swaps it in (admin).
#[utoipa::path(post, path = "/api/admin/model/train", tag = "recommendations", security(("bearer" = [])),
    responses((status = 200, body = ModelInfo), (status = 409, body = crate::Problem),
        (status = 422, body = crate::Problem)))]
pub async fn train(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<ModelInfo>> {
    caller.require(Role::Admin)?;
    match state.recs.train(std::sync::Arc::new(|_| ())).await {
        Ok(t) => Ok(Json(info(Some(&t)))),
        Err(recs::TrainError::Busy) => Err(ApiError::Conflict(
            "a training run is already going on".into(),
        )),
        Err(recs::TrainError::Model(m)) => Err(ApiError::field("", m)),
        Err(recs::TrainError::Store(e)) => Err(e.into()),
    }
}

/// What one model version earned, in total and per source.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attribution {
    /// The model version, or `popularity` for answers given without one.
    pub model_version: String,
    pub responses: i64,
    #[serde(flatten)]
    pub totals: Funnel,
    /// The same funnel per candidate source (events that carried an item's
    /// `recommendation_id`).
    pub sources: Vec<SourceFunnel>,
}

/// One source's funnel within a model version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceFunnel {
    pub source: String,
    #[serde(flatten)]
    pub funnel: Funnel,
}

/// Impressions → clicks → basket adds → purchases.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    /// Items shown.
    pub impressions: i64,
    /// Views that carried one of its recommendation ids (as do
    /// `basket_adds` and `purchases`).
    pub clicks: i64,
    pub basket_adds: i64,
    pub purchases: i64,
    /// clicks / impressions.
    pub click_rate: f64,
    /// purchases / clicks.
    pub purchase_rate: f64,
}

/// Recommendation impressions → clicks → basket adds → purchases per model
/// version (admin).
#[utoipa::path(get, path = "/api/analytics/recommendations", tag = "analytics", security(("bearer" = [])),
    responses((status = 200, body = Vec<Attribution>), (status = 403, body = crate::Problem)))]
pub async fn attribution(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Attribution>>> {
    caller.require(Role::Admin)?;
    let mut out = Vec::new();
    let mut sources: HashMap<String, Vec<SourceFunnel>> = HashMap::new();
    let mut q = storage::Query {
        limit: 1000,
        descending: true,
        ..storage::Query::default()
    };
    loop {
        let page = state
            .store
            .query(storage::Table::Analytics, "reco", &q)
            .await?;
        for item in &page.items {
            let n = |a: &str| match item.get(a) {
                Some(storage::Value::N(v)) => v.parse::<i64>().unwrap_or(0),
                _ => 0,
            };
            let (impressions, clicks, purchases) = (n("impressions"), n("clicks"), n("purchases"));
            let funnel = Funnel {
                impressions,
                clicks,
                basket_adds: n("basket_adds"),
                purchases,
                click_rate: f64::from(ratio(clicks as f64, impressions as f64)),
                purchase_rate: f64::from(ratio(purchases as f64, clicks as f64)),
            };
            let sk = storage::Key::of(item)?.sk;
            match sk.split_once('#') {
                Some((version, source)) => {
                    sources
                        .entry(version.to_owned())
                        .or_default()
                        .push(SourceFunnel {
                            source: source.to_owned(),
                            funnel,
                        })
                }
                None => out.push(Attribution {
                    model_version: sk,
                    responses: n("responses"),
                    totals: funnel,
                    sources: Vec::new(),
                }),
            }
        }
        match page.cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    for a in &mut out {
        a.sources = sources.remove(&a.model_version).unwrap_or_default();
    }
    Ok(Json(out))
}
