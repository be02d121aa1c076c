//! The shop's live rules, applied at request time over the [`Catalogue`]:
//! nothing deleted, out of stock, excluded (history, basket, bought outside
//! repeat categories) or outside the asked category, at most a few items per
//! category. Candidates come from the model, then popularity, then the
//! context's category.

use std::collections::{HashMap, HashSet};

use domain::Product;
use rust_decimal::Decimal;
use storage::StoreError;
use time::Duration;

use crate::{
    candidates::{self, Candidate, Source},
    catalogue::Catalogue,
    model::Trained,
};

/// What the rules keep out and cap.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Product ids never served.
    pub exclude: HashSet<String>,
    /// Only this category, if set.
    pub category: Option<String>,
    /// At most this many items of one category.
    pub per_category: usize,
}

/// One item that passed the rules, read live.
#[derive(Clone, Debug)]
pub struct Served {
    pub product: Product,
    /// Units available now.
    pub available: i64,
    pub score: f32,
    /// A short reason for a person.
    pub reason: String,
    /// The candidate source's name (see [`Source::name`]).
    pub source: &'static str,
}

/// The most model candidates the rules go through for one answer.
const MAX_CANDIDATES: usize = 2000;

/// How many candidates' products are read at once (concurrently: on DynamoDB
/// each read is a round trip).
const READ_AHEAD: usize = 16;

/// What one request has read: products (`None`: not in the catalogue) and
/// their availability, so that asking the model for more candidates, or
/// naming an item in a reason, never reads the same thing twice.
#[derive(Debug)]
pub struct Reads<'a> {
    catalogue: &'a dyn Catalogue,
    products: HashMap<String, Option<Product>>,
    available: HashMap<String, i64>,
}

impl<'a> Reads<'a> {
    pub fn new(catalogue: &'a dyn Catalogue) -> Self {
        Self {
            catalogue,
            products: HashMap::new(),
            available: HashMap::new(),
        }
    }

    /// Reads the products of `ids` not read yet, concurrently.
    async fn read_products(&mut self, ids: &[&str]) -> Result<(), StoreError> {
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !self.products.contains_key(*id))
            .collect();
        let catalogue = self.catalogue;
        let got =
            futures::future::try_join_all(missing.iter().map(|id| catalogue.product(id))).await?;
        for (id, p) in missing.into_iter().zip(got) {
            self.products.insert(id.to_owned(), p);
        }
        Ok(())
    }

    async fn product(&mut self, id: &str) -> Result<Option<&Product>, StoreError> {
        self.read_products(&[id]).await?;
        Ok(self.products.get(id).and_then(Option::as_ref))
    }

    async fn available(&mut self, id: &str) -> Result<i64, StoreError> {
        if let Some(n) = self.available.get(id) {
            return Ok(*n);
        }
        let n = self.catalogue.available(id).await?;
        self.available.insert(id.to_owned(), n);
        Ok(n)
    }

    async fn name(&mut self, id: &str) -> String {
        match self.product(id).await {
            Ok(Some(p)) => p.name.clone(),
            _ => "a product".to_owned(),
        }
    }

    async fn reason(&mut self, source: &Source) -> String {
        match source {
            Source::Sequence(x) => format!("viewed after {}", self.name(x).await),
            Source::CoOccurrence(x) => format!("viewed together with {}", self.name(x).await),
            Source::Embedding(x) => format!("similar to {}", self.name(x).await),
            Source::BoughtTogether(x) => format!("often bought with {}", self.name(x).await),
            Source::Repeat => "you bought it before".to_owned(),
            Source::Popularity => "popular right now".to_owned(),
            Source::Category(k) => format!("new in {k}"),
            Source::Newest => "new in the shop".to_owned(),
        }
    }
}

/// Applies the rules to candidates in order until `limit` are kept.
pub async fn apply(
    candidates: &[Candidate],
    rules: &Rules,
    limit: usize,
    reads: &mut Reads<'_>,
) -> Result<Vec<Served>, StoreError> {
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
            reads.read_products(&ahead).await?;
        }
        // Deleted products are gone from the catalogue.
        let Some(p) = reads.product(&c.product_id).await?.cloned() else {
            continue;
        };
        if rules.category.as_ref().is_some_and(|k| *k != p.category) {
            continue;
        }
        if per_category.get(&p.category).copied().unwrap_or(0) >= rules.per_category {
            continue;
        }
        let available = reads.available(&c.product_id).await?;
        if available <= 0 {
            continue;
        }
        *per_category.entry(p.category.clone()).or_default() += 1;
        let reason = reads.reason(&c.source).await;
        out.push(Served {
            product: p,
            available,
            score: c.score,
            reason,
            source: c.source.name(),
        });
    }
    Ok(out)
}

/// Trending products as candidates, each scored by its share of the
/// activity.
pub async fn trending(
    catalogue: &dyn Catalogue,
    window: Duration,
    limit: usize,
) -> Result<Vec<Candidate>, StoreError> {
    let ranked = catalogue.trending(window, limit).await?;
    let total: i64 = ranked.iter().map(|(_, s)| *s).sum();
    Ok(ranked
        .into_iter()
        .map(|(id, s)| Candidate {
            product_id: id,
            category_hint: None,
            score: if total > 0 {
                (s as f64 / total as f64) as f32
            } else {
                0.0
            },
            source: Source::Popularity,
        })
        .collect())
}

/// Popular products now (1 h, then 24 h), as candidates.
async fn popular(catalogue: &dyn Catalogue) -> Result<Vec<Candidate>, StoreError> {
    let mut out: Vec<Candidate> = Vec::new();
    for window in [Duration::hours(1), Duration::hours(24)] {
        for c in trending(catalogue, window, 200).await? {
            if !out.iter().any(|x| x.product_id == c.product_id) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// The category's 100 newest products, nearest in price first (newest
/// first without a price): how a product with no interactions yet is found.
async fn in_category(
    catalogue: &dyn Catalogue,
    category: &str,
    price: Option<Decimal>,
) -> Result<Vec<Candidate>, StoreError> {
    let mut list = catalogue.newest_in_category(category, 100).await?;
    if let Some(p) = price {
        // Stable: equally near, the newer first.
        list.sort_by_key(|x| (x.price.amount() - p).abs());
    }
    Ok(unranked(list, || Source::Category(category.to_owned())))
}

/// Products as candidates without a score, in their order, from `source`.
fn unranked(list: Vec<Product>, source: impl Fn() -> Source) -> Vec<Candidate> {
    list.into_iter()
        .map(|x| Candidate {
            product_id: x.id.to_string(),
            category_hint: Some(std::sync::Arc::from(x.category.as_str())),
            score: 0.0,
            source: source(),
        })
        .collect()
}

/// A subject's history (oldest first, ending with the product on screen)
/// and the rules' exclusions for it: what it touched, what is in its basket,
/// what it bought (unless the product is in one of the `repeat`
/// categories), and the product on screen.
pub async fn personal(
    catalogue: &dyn Catalogue,
    profile: &processors::state::Profile,
    basket: impl IntoIterator<Item = String>,
    repeat: &[String],
    context: Option<&Product>,
) -> Result<(Vec<String>, HashSet<String>), StoreError> {
    let (mut history, bought) = candidates::history_of(profile);
    let mut exclude: HashSet<String> = history.iter().cloned().collect();
    exclude.extend(basket);
    for b in bought {
        // Bought items come back only in repeat categories (groceries).
        let again = !repeat.is_empty()
            && catalogue
                .product(&b)
                .await?
                .is_some_and(|p| repeat.contains(&p.category));
        if again {
            exclude.remove(&b);
        } else {
            exclude.insert(b);
        }
    }
    if let Some(c) = context {
        // The page on screen is the newest thing in the history.
        history.push(c.id.to_string());
        exclude.insert(c.id.to_string());
    }
    Ok((history, exclude))
}

/// Excludes what was kept, so a later source cannot serve it again.
fn keep(rules: &mut Rules, items: &[Served]) {
    rules
        .exclude
        .extend(items.iter().map(|i| i.product.id.to_string()));
}

/// Personal recommendations: the model's candidates for `history` (asking
/// for more when the rules drop many), then popularity, then the category
/// asked for or the context's, until `limit` are kept.
pub async fn recommend(
    catalogue: &dyn Catalogue,
    model: Option<&Trained>,
    history: &[String],
    context: Option<&Product>,
    mut rules: Rules,
    limit: usize,
) -> Result<Vec<Served>, StoreError> {
    let mut reads = Reads::new(catalogue);
    let mut items: Vec<Served> = Vec::new();
    if let Some(t) = model {
        // Ranking scores every candidate whatever the cut, so rank once;
        // the rules go through a growing prefix until `limit` are kept
        // (what they read is kept in `reads`, so going again is cheap).
        let ranked = candidates::rank(t, history, MAX_CANDIDATES, &rules.exclude);
        let mut want = (limit * 4 + 20).min(ranked.len());
        loop {
            let cands: Vec<Candidate> = ranked[..want]
                .iter()
                .map(|s| candidates::candidate(t, s))
                .collect();
            items = apply(&cands, &rules, limit, &mut reads).await?;
            if items.len() >= limit || want == ranked.len() {
                break;
            }
            want = (want * 4).min(ranked.len());
        }
    }
    keep(&mut rules, &items);
    if items.len() < limit {
        let more = apply(
            &popular(catalogue).await?,
            &rules,
            limit - items.len(),
            &mut reads,
        )
        .await?;
        keep(&mut rules, &more);
        items.extend(more);
    }
    let category = rules
        .category
        .clone()
        .or_else(|| context.map(|p| p.category.clone()));
    if items.len() < limit
        && let Some(k) = &category
    {
        let cands = in_category(catalogue, k, context.map(|p| p.price.amount())).await?;
        let more = apply(&cands, &rules, limit - items.len(), &mut reads).await?;
        keep(&mut rules, &more);
        items.extend(more);
    }
    // A new shop, or one whose behaviour all went elsewhere: the newest
    // products in stock, so the shelf is never empty (within the category
    // asked for, which the category step above already read).
    if items.len() < limit && rules.category.is_none() {
        let cands = unranked(catalogue.newest(NEWEST_FALLBACK).await?, || Source::Newest);
        items.extend(apply(&cands, &rules, limit - items.len(), &mut reads).await?);
    }
    Ok(items)
}

/// How many of the shop's newest products the last fallback looks at.
const NEWEST_FALLBACK: usize = 200;

/// Products like `product`: the model's neighbours, then the newest of its
/// category nearest in price.
pub async fn similar(
    catalogue: &dyn Catalogue,
    model: Option<&Trained>,
    product: &Product,
    mut rules: Rules,
    limit: usize,
) -> Result<Vec<Served>, StoreError> {
    let mut reads = Reads::new(catalogue);
    let id = product.id.to_string();
    let mut items = match model {
        Some(t) => apply(&candidates::similar(t, &id), &rules, limit, &mut reads).await?,
        None => Vec::new(),
    };
    if items.len() < limit {
        keep(&mut rules, &items);
        let cands = in_category(catalogue, &product.category, Some(product.price.amount())).await?;
        items.extend(apply(&cands, &rules, limit - items.len(), &mut reads).await?);
    }
    Ok(items)
}

/// What is bought with `product_id`, as of the last training; no fallback.
pub async fn bought_together(
    catalogue: &dyn Catalogue,
    model: Option<&Trained>,
    product_id: &str,
    rules: &Rules,
    limit: usize,
) -> Result<Vec<Served>, StoreError> {
    match model {
        Some(t) => {
            let cands = candidates::bought_with(t, product_id);
            apply(&cands, rules, limit, &mut Reads::new(catalogue)).await
        }
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::{Currency, Price, ProductId};
    use time::OffsetDateTime;

    use super::*;
    use crate::catalogue::MemoryCatalogue;

    fn product(name: &str, category: &str, price: &str, age_secs: i64) -> Product {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000 - age_secs).unwrap();
        Product {
            id: ProductId::new(),
            sku: name.to_uppercase(),
            name: name.to_owned(),
            description: String::new(),
            price: Price::parse(price).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            category: category.to_owned(),
            supplier_id: None,
            image_url: None,
            attributes: BTreeMap::new(),
            low_stock_threshold: 0,
            created_at: at,
            updated_at: at,
            version: 1,
        }
    }

    fn candidate(p: &Product, source: Source, hint: Option<&str>) -> Candidate {
        Candidate {
            product_id: p.id.to_string(),
            category_hint: hint.map(std::sync::Arc::from),
            score: 0.5,
            source,
        }
    }

    fn names(items: &[Served]) -> Vec<&str> {
        items.iter().map(|i| i.product.name.as_str()).collect()
    }

    fn rules(per_category: usize) -> Rules {
        Rules {
            per_category,
            ..Rules::default()
        }
    }

    #[tokio::test]
    async fn out_of_stock_deleted_and_excluded_items_are_never_served() {
        let cat = MemoryCatalogue::default();
        let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(|n| product(n, "socks", "5.00", 0));
        cat.put(a.clone(), 3);
        cat.put(b.clone(), 0);
        cat.put(c.clone(), 2);
        cat.put(d.clone(), 1);
        cat.put(e.clone(), -1);
        cat.delete(&c.id.to_string());
        let mut rules = rules(10);
        rules.exclude.insert(d.id.to_string());
        let cands: Vec<Candidate> = [&a, &b, &c, &d, &e]
            .map(|p| candidate(p, Source::Popularity, None))
            .to_vec();
        let served = apply(&cands, &rules, 10, &mut Reads::new(&cat))
            .await
            .unwrap();
        assert_eq!(
            names(&served),
            ["a"],
            "b and e are sold out, c deleted, d excluded"
        );
        assert_eq!(served[0].available, 3);
        assert_eq!(served[0].source, "popularity");
    }

    #[tokio::test]
    async fn the_category_cap_and_filter_hold_and_hints_skip_reads() {
        let cat = MemoryCatalogue::default();
        let socks: Vec<Product> = (0..4)
            .map(|i| product(&format!("sock{i}"), "socks", "5.00", i))
            .collect();
        let hat = product("hat", "hats", "9.00", 0);
        for p in socks.iter().chain([&hat]) {
            cat.put(p.clone(), 5);
        }
        let mut cands: Vec<Candidate> = socks
            .iter()
            .map(|p| candidate(p, Source::Popularity, Some("socks")))
            .collect();
        cands.push(candidate(&hat, Source::Popularity, Some("hats")));
        let served = apply(&cands, &rules(2), 10, &mut Reads::new(&cat))
            .await
            .unwrap();
        assert_eq!(
            names(&served),
            ["sock0", "sock1", "hat"],
            "two per category"
        );
        // Hinted candidates of a full category were never read (the first
        // read-ahead covers all five before any category is full; a second
        // pass with the cap already reached reads only the hat).
        let only_hats = Rules {
            category: Some("hats".into()),
            ..rules(2)
        };
        let before = cat.product_reads();
        let served = apply(&cands, &only_hats, 10, &mut Reads::new(&cat))
            .await
            .unwrap();
        assert_eq!(names(&served), ["hat"]);
        assert_eq!(
            cat.product_reads() - before,
            1,
            "socks skipped unread by their hint"
        );
    }

    #[tokio::test]
    async fn reasons_name_the_related_product() {
        let cat = MemoryCatalogue::default();
        let seen = product("Merino socks", "socks", "12.00", 0);
        let next = product("Wool hat", "hats", "20.00", 0);
        cat.put(seen.clone(), 1);
        cat.put(next.clone(), 1);
        let id = seen.id.to_string();
        for (source, reason) in [
            (Source::Sequence(id.clone()), "viewed after Merino socks"),
            (
                Source::CoOccurrence(id.clone()),
                "viewed together with Merino socks",
            ),
            (Source::Embedding(id.clone()), "similar to Merino socks"),
            (
                Source::BoughtTogether(id.clone()),
                "often bought with Merino socks",
            ),
            (Source::Sequence("gone".into()), "viewed after a product"),
            (Source::Category("hats".into()), "new in hats"),
        ] {
            let served = apply(
                &[candidate(&next, source, None)],
                &rules(3),
                1,
                &mut Reads::new(&cat),
            )
            .await
            .unwrap();
            assert_eq!(served[0].reason, reason);
        }
    }

    #[tokio::test]
    async fn without_a_model_popularity_then_the_context_category_fill_the_answer() {
        let cat = MemoryCatalogue::default();
        let hot = product("hot", "mugs", "3.00", 0);
        let context = product("on screen", "teapots", "30.00", 50);
        let near = product("near in price", "teapots", "31.00", 20);
        let far = product("far in price", "teapots", "90.00", 10);
        for p in [&hot, &context, &near, &far] {
            cat.put(p.clone(), 4);
        }
        cat.set_trending(vec![(hot.id.to_string(), 7), ("not-a-product".into(), 3)]);
        let mut rules = rules(3);
        rules.exclude.insert(context.id.to_string());
        let served = recommend(&cat, None, &[], Some(&context), rules, 3)
            .await
            .unwrap();
        assert_eq!(names(&served), ["hot", "near in price", "far in price"]);
        assert_eq!(served[0].source, "popularity");
        assert!(
            (served[0].score - 0.7).abs() < 1e-6,
            "share of the activity"
        );
        assert_eq!(served[1].source, "category");
        assert_eq!(served[1].reason, "new in teapots");
    }

    #[tokio::test]
    async fn a_new_shop_recommends_its_newest_products_in_stock() {
        let cat = MemoryCatalogue::default();
        let old = product("old", "mugs", "3.00", 300);
        let sold_out = product("sold out", "mugs", "3.00", 100);
        let newer = product("newer", "hats", "9.00", 200);
        let newest = product("newest", "socks", "5.00", 0);
        let in_basket = product("in basket", "socks", "5.00", 50);
        cat.put(old.clone(), 1);
        cat.put(sold_out.clone(), 0);
        cat.put(newer.clone(), 2);
        cat.put(newest.clone(), 3);
        cat.put(in_basket.clone(), 3);
        let mut rules = rules(3);
        rules.exclude.insert(in_basket.id.to_string());
        let served = recommend(&cat, None, &[], None, rules, 10).await.unwrap();
        assert_eq!(names(&served), ["newest", "newer", "old"]);
        assert!(served.iter().all(|s| s.source == "newest"));
        assert_eq!(served[0].reason, "new in the shop");
        // Asked for one category, the answer stays in it.
        let mut only = self::rules(3);
        only.category = Some("hats".into());
        let served = recommend(&cat, None, &[], None, only, 10).await.unwrap();
        assert_eq!(names(&served), ["newer"]);
    }

    #[tokio::test]
    async fn similar_without_a_model_is_the_category_nearest_in_price() {
        let cat = MemoryCatalogue::default();
        let this = product("this", "lamps", "40.00", 0);
        let cheap = product("cheap", "lamps", "10.00", 0);
        let close = product("close", "lamps", "45.00", 0);
        let other = product("other", "chairs", "40.00", 0);
        for p in [&this, &cheap, &close, &other] {
            cat.put(p.clone(), 2);
        }
        let rules = Rules {
            exclude: HashSet::from([this.id.to_string()]),
            ..rules(5)
        };
        let served = similar(&cat, None, &this, rules, 5).await.unwrap();
        assert_eq!(names(&served), ["close", "cheap"]);
        assert!(served.iter().all(|s| s.source == "category"));
        let none = bought_together(&cat, None, &this.id.to_string(), &self::rules(5), 5)
            .await
            .unwrap();
        assert!(none.is_empty(), "bought-together has no fallback");
    }

    #[tokio::test]
    async fn bought_items_come_back_only_in_repeat_categories() {
        use processors::state::{Profile, Touch};
        let cat = MemoryCatalogue::default();
        let milk = product("milk", "groceries", "1.00", 0);
        let lamp = product("lamp", "lamps", "30.00", 0);
        let viewed = product("viewed", "lamps", "30.00", 0);
        let on_screen = product("on screen", "lamps", "30.00", 0);
        for p in [&milk, &lamp, &viewed, &on_screen] {
            cat.put(p.clone(), 1);
        }
        let touch = |p: &Product, at| Touch {
            product_id: p.id.to_string(),
            at,
        };
        let mut profile = Profile::default();
        profile.purchases.push_front(touch(&milk, 1));
        profile.purchases.push_front(touch(&lamp, 2));
        profile.recent_views.push_front(touch(&viewed, 3));
        let (history, exclude) = personal(
            &cat,
            &profile,
            ["in-basket".to_owned()],
            &["groceries".to_owned()],
            Some(&on_screen),
        )
        .await
        .unwrap();
        let id = |p: &Product| p.id.to_string();
        assert_eq!(history, [id(&milk), id(&lamp), id(&viewed), id(&on_screen)]);
        assert!(!exclude.contains(&id(&milk)), "groceries are bought again");
        for kept_out in [id(&lamp), id(&viewed), id(&on_screen), "in-basket".into()] {
            assert!(exclude.contains(&kept_out), "{kept_out}");
        }
        let (_, no_repeat) = personal(&cat, &profile, [], &[], None).await.unwrap();
        assert!(no_repeat.contains(&id(&milk)));
    }
}
