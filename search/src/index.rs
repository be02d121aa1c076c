//! The index itself: its schema and analyzers, the writes the keeper makes,
//! and the queries a search runs. Pure tantivy, in memory; nothing here
//! reads the store.

use std::{
    ops::Bound,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use domain::{Product, ProductId};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Score, Searcher,
    TantivyDocument, Term,
    collector::{Count, FacetCollector, TopDocs},
    query::{
        AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query,
        RangeQuery, TermQuery,
    },
    schema::{
        FAST, Facet, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
        TextFieldIndexing, TextOptions, Value,
    },
    tokenizer::{
        AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
        TextAnalyzer,
    },
};

/// Stemmed words (`socks` and `sock` are one term): what ranking matches.
const STEMMED: &str = "shop_stemmed";
/// Words as written, folded to lowercase ASCII: what typo tolerance and
/// prefixes match (a stem is not what a shopper types).
const WORDS: &str = "shop_words";
/// Longer tokens are not words (ids, hashes) and are left out.
const MAX_TOKEN_LEN: usize = 40;
/// The most words of a query that are looked at.
pub const MAX_QUERY_TERMS: usize = 12;
/// The deepest result a search pages to (as Elasticsearch's result window).
pub const MAX_OFFSET: usize = 1000;

/// Why a search or an index write failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The first build from the catalogue has not finished.
    #[error("the search index is being built")]
    NotReady,
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index: a document has no product id")]
    Corrupt,
    #[error("search index: the category list does not encode: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone, Copy, Debug)]
struct Fields {
    id: Field,
    name: Field,
    description: Field,
    category_text: Field,
    attributes: Field,
    words: Field,
    category: Field,
    supplier: Field,
    in_stock: Field,
    price: Field,
    created: Field,
}

fn text(analyzer: &str) -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(analyzer)
            .set_index_option(IndexRecordOption::WithFreqs),
    )
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        name: b.add_text_field("name", text(STEMMED)),
        description: b.add_text_field("description", text(STEMMED)),
        category_text: b.add_text_field("category_text", text(STEMMED)),
        attributes: b.add_text_field("attributes", text(STEMMED)),
        words: b.add_text_field("words", text(WORDS)),
        category: b.add_facet_field("category", FacetOptions::default()),
        supplier: b.add_text_field("supplier", STRING),
        in_stock: b.add_bool_field("in_stock", INDEXED | STORED),
        price: b.add_f64_field("price", FAST),
        created: b.add_i64_field("created", FAST),
    };
    (b.build(), fields)
}

fn analyzer(stem: bool) -> TextAnalyzer {
    let words = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_LEN))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    if stem {
        words.filter(Stemmer::new(Language::English)).build()
    } else {
        words.build()
    }
}

/// What a search asks for. Filters narrow the set the query ranks; `q`
/// empty lists the filtered products, newest first.
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    pub q: String,
    pub category: Option<String>,
    pub supplier_id: Option<String>,
    /// Only products with stock available to sell.
    pub in_stock: Option<bool>,
    /// Price bounds, inclusive, in the product's own currency's major unit.
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
    pub limit: usize,
    pub offset: usize,
}

/// One product found: its id (the caller reads the product as the
/// catalogue has it now, so a hit never shows an older version than a read
/// would).
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: ProductId,
    pub in_stock: bool,
    /// How well it matched (higher is better); 0 without a query.
    pub score: f32,
}

/// A page of what a search found.
#[derive(Clone, Debug)]
pub struct SearchResults {
    pub hits: Vec<Hit>,
    /// How many products matched in all.
    pub total: usize,
    /// How many of the matches are in each category, most first.
    pub categories: Vec<(String, u64)>,
    /// No product matched every word, so these match some.
    pub relaxed: bool,
}

/// A product's search document, made by the keeper.
#[derive(Clone, Debug)]
pub struct Doc {
    pub product: Product,
    pub in_stock: bool,
}

/// The catalogue's search index, in memory. Writes come from one keeper
/// (see [`crate::Keeper`]) and are seen by searches after [`SearchIndex::commit`].
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    ready: AtomicBool,
    /// The categories that have products, in name order, as JSON: the
    /// maintained list `/api/categories` answers with.
    categories: RwLock<Arc<[u8]>>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("ready", &self.is_ready())
            .field("documents", &self.reader.searcher().num_docs())
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// An empty index. `memory` is the writer's buffer in bytes (at least
    /// 15 MB).
    pub fn new(memory: usize) -> Result<Self, SearchError> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        index.tokenizers().register(STEMMED, analyzer(true));
        index.tokenizers().register(WORDS, analyzer(false));
        // One indexing thread: the index is small and the cores are the
        // pipeline's.
        let writer = index.writer_with_num_threads(1, memory.max(15_000_000))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            ready: AtomicBool::new(false),
            categories: RwLock::new(Arc::from(&b"[]"[..])),
        })
    }

    /// Whether the first build has been committed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id_term(&self, id: ProductId) -> Term {
        Term::from_field_text(self.fields.id, &id.to_string())
    }

    fn document(&self, doc: &Doc) -> Result<TantivyDocument, SearchError> {
        let (f, p) = (self.fields, &doc.product);
        let mut d = TantivyDocument::default();
        d.add_text(f.id, p.id.to_string());
        d.add_text(f.name, &p.name);
        d.add_text(f.description, &p.description);
        d.add_text(f.category_text, &p.category);
        for v in p.attributes.values() {
            d.add_text(f.attributes, v);
        }
        d.add_text(f.words, &p.name);
        d.add_text(f.words, &p.category);
        for v in p.attributes.values() {
            d.add_text(f.words, v);
        }
        d.add_facet(f.category, Facet::from_path([p.category.as_str()]));
        if let Some(s) = &p.supplier_id {
            d.add_text(f.supplier, s);
        }
        d.add_bool(f.in_stock, doc.in_stock);
        d.add_f64(f.price, p.price.amount().try_into().unwrap_or(f64::MAX));
        d.add_i64(
            f.created,
            (p.created_at.unix_timestamp_nanos() / 1_000) as i64,
        );
        Ok(d)
    }

    /// Adds or replaces products (seen after the next commit).
    pub fn upsert(&self, docs: &[Doc]) -> Result<(), SearchError> {
        let writer = self.writer();
        for doc in docs {
            writer.delete_term(self.id_term(doc.product.id));
            writer.add_document(self.document(doc)?)?;
        }
        Ok(())
    }

    /// Removes products (gone after the next commit).
    pub fn delete(&self, ids: &[ProductId]) {
        let writer = self.writer();
        for id in ids {
            writer.delete_term(self.id_term(*id));
        }
    }

    /// Removes every product, for a rebuild (searches see the old ones until
    /// the commit that follows it).
    pub fn clear(&self) -> Result<(), SearchError> {
        self.writer().delete_all_documents()?;
        Ok(())
    }

    /// Makes the writes so far visible to searches, with the category list
    /// as it now is. Blocks (a commit writes segments): call it off the
    /// async runtime.
    pub fn commit(&self, categories: &[String]) -> Result<(), SearchError> {
        self.writer().commit()?;
        self.reader.reload()?;
        let json = serde_json::to_vec(categories)?;
        *self.categories.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(json);
        self.ready.store(true, Ordering::Release);
        metrics::gauge!("shopstream_search_documents")
            .set(self.reader.searcher().num_docs() as f64);
        metrics::counter!("shopstream_search_commits_total").increment(1);
        Ok(())
    }

    /// The categories that have products, in name order, as a JSON array.
    pub fn categories_json(&self) -> Option<Arc<[u8]>> {
        self.is_ready().then(|| {
            self.categories
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// A query's words as `analyzer` makes them, at most [`MAX_QUERY_TERMS`].
    fn tokens(&self, analyzer: &str, q: &str) -> Vec<String> {
        let mut a = self
            .index
            .tokenizers()
            .get(analyzer)
            .expect("registered in new");
        let mut out = Vec::new();
        let mut stream = a.token_stream(q);
        while stream.advance() && out.len() < MAX_QUERY_TERMS {
            out.push(stream.token().text.clone());
        }
        out
    }

    /// What must match for one word of the query: the word itself in the
    /// name (most), the category, the attributes or the description; a word
    /// a typo or two away; and, for the last word, any word it begins
    /// (search as you type).
    fn word_query(&self, stemmed: &str, word: &str, last: bool) -> Box<dyn Query> {
        let f = self.fields;
        let exact = |field: Field, boost: Score| -> (Occur, Box<dyn Query>) {
            let q = TermQuery::new(
                Term::from_field_text(field, stemmed),
                IndexRecordOption::WithFreqs,
            );
            (Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost)))
        };
        let mut clauses = vec![
            exact(f.name, 3.0),
            exact(f.category_text, 1.5),
            exact(f.attributes, 1.2),
            exact(f.description, 0.6),
        ];
        let len = word.chars().count();
        let term = Term::from_field_text(f.words, word);
        // As Elasticsearch's `fuzziness: AUTO`: none up to 3 letters, one
        // edit up to 7, two beyond. A transposition is one edit.
        let distance = match len {
            0..=3 => 0,
            4..=7 => 1,
            _ => 2,
        };
        if distance > 0 {
            let q = FuzzyTermQuery::new(term.clone(), distance, true);
            clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), 0.5))));
        }
        if last && len >= 2 {
            let q = FuzzyTermQuery::new_prefix(term, 0, true);
            clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), 0.4))));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    fn filters(&self, req: &SearchRequest) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.fields;
        let mut out: Vec<Box<dyn Query>> = Vec::new();
        if let Some(c) = &req.category {
            out.push(Box::new(TermQuery::new(
                Term::from_facet(f.category, &Facet::from_path([c.as_str()])),
                IndexRecordOption::Basic,
            )));
        }
        if let Some(s) = &req.supplier_id {
            out.push(Box::new(TermQuery::new(
                Term::from_field_text(f.supplier, s),
                IndexRecordOption::Basic,
            )));
        }
        if let Some(b) = req.in_stock {
            out.push(Box::new(TermQuery::new(
                Term::from_field_bool(f.in_stock, b),
                IndexRecordOption::Basic,
            )));
        }
        if req.min_price.is_some() || req.max_price.is_some() {
            let bound = |v: Option<f64>| match v {
                Some(v) => Bound::Included(Term::from_field_f64(f.price, v)),
                None => Bound::Unbounded,
            };
            out.push(Box::new(RangeQuery::new(
                bound(req.min_price),
                bound(req.max_price),
            )));
        }
        // Filters narrow; they do not rank.
        out.into_iter()
            .map(|q| {
                (
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(q, 0.0)) as Box<dyn Query>,
                )
            })
            .collect()
    }

    /// Runs a search. CPU-bound (about a millisecond at 100,000 products):
    /// call it off the async runtime.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResults, SearchError> {
        if !self.is_ready() {
            return Err(SearchError::NotReady);
        }
        let searcher = self.reader.searcher();
        let stemmed = self.tokens(STEMMED, &req.q);
        let words = self.tokens(WORDS, &req.q);
        let limit = req.limit.max(1);
        let offset = req.offset.min(MAX_OFFSET);
        if stemmed.is_empty() || stemmed.len() != words.len() {
            // No words (or an analyzer disagreement, which the same
            // tokenizer rules out): the filtered products, newest first.
            let mut clauses = self.filters(req);
            clauses.push((Occur::Must, Box::new(AllQuery)));
            let query = BooleanQuery::new(clauses);
            let top = TopDocs::with_limit(limit)
                .and_offset(offset)
                .order_by_fast_field::<i64>("created", Order::Desc);
            let (top, total, facets) =
                searcher.search(&query, &(top, Count, self.facet_collector()))?;
            let hits = top.into_iter().map(|(_, a)| (0.0, a)).collect::<Vec<_>>();
            return self.results(&searcher, &hits, total, &facets, false);
        }
        let n = stemmed.len();
        let groups: Vec<Box<dyn Query>> = stemmed
            .iter()
            .zip(&words)
            .enumerate()
            .map(|(i, (s, w))| self.word_query(s, w, i + 1 == n))
            .collect();
        // Every word first; when nothing has all of them, the products with
        // the most.
        for relaxed in [false, true] {
            if relaxed && n == 1 {
                break;
            }
            let occur = if relaxed { Occur::Should } else { Occur::Must };
            let mut clauses = self.filters(req);
            let words = groups.iter().map(|g| (occur, g.box_clone())).collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(words))));
            let query = BooleanQuery::new(clauses);
            let top = TopDocs::with_limit(limit)
                .and_offset(offset)
                .order_by_score();
            let (top, total, facets) =
                searcher.search(&query, &(top, Count, self.facet_collector()))?;
            if total > 0 || relaxed {
                return self.results(&searcher, &top, total, &facets, relaxed);
            }
        }
        Ok(SearchResults {
            hits: Vec::new(),
            total: 0,
            categories: Vec::new(),
            relaxed: false,
        })
    }

    fn facet_collector(&self) -> FacetCollector {
        let mut c = FacetCollector::for_field("category");
        c.add_facet(Facet::root());
        c
    }

    fn results(
        &self,
        searcher: &Searcher,
        top: &[(Score, DocAddress)],
        total: usize,
        facets: &tantivy::collector::FacetCounts,
        relaxed: bool,
    ) -> Result<SearchResults, SearchError> {
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(*address)?;
            let f = self.fields;
            let Some(id) = doc
                .get_first(f.id)
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok())
            else {
                return Err(SearchError::Corrupt);
            };
            let in_stock = doc
                .get_first(f.in_stock)
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            hits.push(Hit {
                id,
                in_stock,
                score: *score,
            });
        }
        let mut categories: Vec<(String, u64)> = facets
            .get(Facet::root())
            .map(|(facet, count)| {
                let name = facet
                    .to_path()
                    .first()
                    .map(|s| (*s).to_owned())
                    .unwrap_or_default();
                (name, count)
            })
            .collect();
        categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(SearchResults {
            hits,
            total,
            categories,
            relaxed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::{Currency, Price};
    use time::OffsetDateTime;

    use super::*;

    fn product(name: &str, category: &str, price: &str, age_secs: i64) -> Product {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000 - age_secs).unwrap();
        Product {
            id: ProductId::new(),
            sku: format!("SKU-{age_secs}"),
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

    /// A catalogue a shop could have: thousands of products made of the
    /// same words in other orders, and near misses of the one looked for.
    fn catalogue() -> (Vec<Doc>, Product) {
        let adjectives = [
            "Merino",
            "Cotton",
            "Wool",
            "Hiking",
            "Running",
            "Thermal",
            "Bamboo",
            "Alpaca",
            "Organic",
            "Waterproof",
            "Lightweight",
            "Classic",
        ];
        let things = [
            ("socks", "Socks"),
            ("sweater", "Knitwear"),
            ("beanie", "Hats"),
            ("gloves", "Gloves"),
            ("boots", "Footwear"),
            ("jacket", "Outerwear"),
            ("scarf", "Accessories"),
            ("blanket", "Home"),
        ];
        let mut docs = Vec::new();
        let mut age = 10;
        for (i, a) in adjectives.iter().enumerate() {
            for b in adjectives.iter().skip(i + 1) {
                for (t, category) in things {
                    // The shop has one merino sock, and one wool sock for
                    // hiking: the one looked for.
                    let pair = [*a, *b];
                    if t == "socks"
                        && (pair.contains(&"Merino")
                            || pair.contains(&"Wool") && pair.contains(&"Hiking"))
                    {
                        continue;
                    }
                    for size in ["S", "M", "L"] {
                        age += 1;
                        let p = product(&format!("{a} {b} {t} {size}"), category, "12.50", age);
                        docs.push(Doc {
                            product: p,
                            in_stock: age % 3 != 0,
                        });
                    }
                }
            }
        }
        for (name, category) in [
            ("Merino sweater", "Knitwear"),
            ("Wool socks", "Socks"),
            ("Hiking boots", "Footwear"),
            ("Merino wool beanie", "Hats"),
            ("Cotton hiking socks", "Socks"),
            ("Merinos: a history of the sheep", "Books"),
        ] {
            age += 1;
            docs.push(Doc {
                product: product(name, category, "20", age),
                in_stock: true,
            });
        }
        let target = product("Merino wool hiking socks", "Socks", "18.90", 5);
        docs.push(Doc {
            product: target.clone(),
            in_stock: true,
        });
        (docs, target)
    }

    fn indexed(docs: &[Doc]) -> SearchIndex {
        let index = SearchIndex::new(20_000_000).unwrap();
        index.upsert(docs).unwrap();
        let names: BTreeMap<String, ()> = docs
            .iter()
            .map(|d| (d.product.category.clone(), ()))
            .collect();
        index
            .commit(&names.into_keys().collect::<Vec<_>>())
            .unwrap();
        index
    }

    fn search(index: &SearchIndex, q: &str) -> SearchResults {
        index
            .search(&SearchRequest {
                q: q.to_owned(),
                limit: 10,
                ..SearchRequest::default()
            })
            .unwrap()
    }

    fn names<'a>(docs: &'a [Doc], r: &SearchResults) -> Vec<&'a str> {
        r.hits.iter().map(|h| name(docs, h.id)).collect()
    }

    fn name(docs: &[Doc], id: ProductId) -> &str {
        let doc = docs.iter().find(|d| d.product.id == id).unwrap();
        &doc.product.name
    }

    fn product_of(docs: &[Doc], id: ProductId) -> &Product {
        &docs.iter().find(|d| d.product.id == id).unwrap().product
    }

    #[test]
    fn the_merino_wool_hiking_socks_come_first_for_words_typos_and_any_order() {
        let (docs, target) = catalogue();
        assert!(docs.len() > 1000, "{}", docs.len());
        let index = indexed(&docs);
        for q in [
            "merino socks",
            "merinno socks",
            "hiking socks wool",
            "Merino wool hiking sokcs",
            "merino wool hik",
        ] {
            let r = search(&index, q);
            assert_eq!(
                r.hits.first().map(|h| h.id),
                Some(target.id),
                "{q:?}: {:?}",
                names(&docs, &r)
            );
            assert!(!r.relaxed, "{q:?}");
        }
        // Near misses rank below it and an unrelated product is not found.
        let r = search(&index, "merino socks");
        assert!(
            !names(&docs, &r).contains(&"Merino sweater"),
            "{:?}",
            names(&docs, &r)
        );
        assert!(r.hits[0].score > r.hits.get(1).map_or(0.0, |h| h.score));
    }

    #[test]
    fn a_query_no_product_matches_in_full_finds_the_ones_with_most_words() {
        let (docs, target) = catalogue();
        let index = indexed(&docs);
        let r = search(&index, "merino wool hiking socks xylophone");
        assert!(r.relaxed);
        assert_eq!(r.hits[0].id, target.id, "{:?}", names(&docs, &r));
        let none = search(&index, "xylophone");
        assert_eq!((none.total, none.hits.len()), (0, 0));
    }

    #[test]
    fn filters_narrow_and_category_counts_count_the_matches() {
        let (docs, _) = catalogue();
        let index = indexed(&docs);
        let all = search(&index, "socks");
        let socks = all.categories.iter().find(|(c, _)| c == "Socks").unwrap().1;
        let expected = docs
            .iter()
            .filter(|d| d.product.name.to_lowercase().contains("socks"))
            .count();
        assert_eq!(all.total, expected);
        assert_eq!(
            socks as usize
                + all
                    .categories
                    .iter()
                    .filter(|(c, _)| c != "Socks")
                    .map(|(_, n)| *n as usize)
                    .sum::<usize>(),
            expected
        );
        let in_stock = index
            .search(&SearchRequest {
                q: "socks".into(),
                in_stock: Some(true),
                limit: 100,
                ..SearchRequest::default()
            })
            .unwrap();
        let expected_in_stock = docs
            .iter()
            .filter(|d| d.in_stock && d.product.name.to_lowercase().contains("socks"))
            .count();
        assert_eq!(in_stock.total, expected_in_stock);
        assert!(in_stock.hits.iter().all(|h| h.in_stock));
        let cheap = index
            .search(&SearchRequest {
                q: "merino".into(),
                min_price: Some(15.0),
                max_price: Some(19.0),
                limit: 100,
                ..SearchRequest::default()
            })
            .unwrap();
        assert_eq!(names(&docs, &cheap), ["Merino wool hiking socks"]);
        let knitwear = index
            .search(&SearchRequest {
                q: "merino".into(),
                category: Some("Knitwear".into()),
                limit: 100,
                ..SearchRequest::default()
            })
            .unwrap();
        assert!(knitwear.total > 1);
        assert!(
            knitwear
                .hits
                .iter()
                .all(|h| product_of(&docs, h.id).category == "Knitwear")
        );
        assert_eq!(
            knitwear.categories,
            [("Knitwear".to_owned(), knitwear.total as u64)]
        );
    }

    #[test]
    fn without_words_the_filtered_products_come_newest_first_a_page_at_a_time() {
        let (docs, target) = catalogue();
        let index = indexed(&docs);
        let first = index
            .search(&SearchRequest {
                category: Some("Socks".into()),
                limit: 3,
                ..SearchRequest::default()
            })
            .unwrap();
        assert_eq!(first.hits[0].id, target.id);
        let ages: Vec<_> = first
            .hits
            .iter()
            .map(|h| product_of(&docs, h.id).created_at)
            .collect();
        assert!(ages.windows(2).all(|w| w[0] >= w[1]), "{ages:?}");
        let second = index
            .search(&SearchRequest {
                category: Some("Socks".into()),
                limit: 3,
                offset: 3,
                ..SearchRequest::default()
            })
            .unwrap();
        assert!(
            second
                .hits
                .iter()
                .all(|h| !first.hits.iter().any(|f| f.id == h.id))
        );
        assert!(product_of(&docs, second.hits[0].id).created_at <= ages[2]);
    }

    #[test]
    fn an_upsert_replaces_a_product_and_a_delete_removes_it() {
        let (docs, mut target) = catalogue();
        let index = indexed(&docs);
        target.name = "Alpine yak trail socks".into();
        index
            .upsert(&[Doc {
                product: target.clone(),
                in_stock: false,
            }])
            .unwrap();
        index.commit(&[]).unwrap();
        assert!(
            !search(&index, "merino wool hiking socks")
                .hits
                .iter()
                .any(|h| h.id == target.id)
        );
        let yak = search(&index, "yak");
        assert_eq!(yak.total, 1);
        assert!(!yak.hits[0].in_stock);
        index.delete(&[target.id]);
        index.commit(&[]).unwrap();
        assert_eq!(search(&index, "yak").total, 0);
        assert_eq!(index.reader.searcher().num_docs() as usize, docs.len() - 1);
    }

    #[test]
    fn the_index_answers_only_once_built() {
        let index = SearchIndex::new(20_000_000).unwrap();
        assert!(matches!(
            index.search(&SearchRequest::default()),
            Err(SearchError::NotReady)
        ));
        assert!(index.categories_json().is_none());
        index
            .commit(&["Hats".to_owned(), "Socks".to_owned()])
            .unwrap();
        assert_eq!(&*index.categories_json().unwrap(), br#"["Hats","Socks"]"#);
    }
}
