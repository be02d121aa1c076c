//! The catalogue entity, and the parsers of its create, replace and patch
//! bodies. Parsing reports every field at fault at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    Currency, Price, ProductId,
    validate::{CONTROL, FieldReader, Len, TRIMMED, ValidationErrors, kind},
};

pub const SKU_LEN: Len = Len { min: 1, max: 64 };
pub const NAME_LEN: Len = Len { min: 1, max: 200 };
pub const DESCRIPTION_LEN: Len = Len { min: 0, max: 5_000 };
pub const CATEGORY_LEN: Len = Len { min: 1, max: 64 };
pub const SUPPLIER_LEN: Len = Len { min: 1, max: 64 };
pub const IMAGE_URL_LEN: Len = Len { min: 1, max: 2_048 };
pub const MAX_ATTRIBUTES: usize = 50;
pub const ATTRIBUTE_KEY_LEN: Len = Len { min: 1, max: 64 };
pub const ATTRIBUTE_VALUE_LEN: Len = Len { min: 0, max: 512 };
pub const MAX_LOW_STOCK_THRESHOLD: i64 = 1_000_000;
pub const DEFAULT_LOW_STOCK_THRESHOLD: u32 = 5;

/// The rules of the product body's constrained strings, as the OpenAPI
/// document states them (the parsers below check the same by hand; a test
/// in `api` holds the two equal).
pub fn sku_pattern() -> String {
    format!("^[{TRIMMED}]*[A-Za-z0-9._-]+[{TRIMMED}]*$")
}
/// A category: text without `#` (it separates key parts).
pub fn category_pattern() -> String {
    format!("^[^#{CONTROL}]*[^#{CONTROL}{TRIMMED}][^#{CONTROL}]*$")
}
/// A price: a plain decimal, at most 999,999,999.999.
pub const PRICE_PATTERN: &str = r"^(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,3})?$";
pub const CURRENCY_PATTERN: &str = "^[A-Z]{3}$";
/// An image: an http(s) URL or a path on this server.
pub fn image_url_pattern() -> String {
    format!("^[{TRIMMED}]*(?:https?://|/)[^{CONTROL}]*$")
}

/// Fields the server owns. On create they are refused; on replace and patch a
/// client may send them back unchanged (they are ignored).
const READ_ONLY: &[&str] = &["id", "created_at", "updated_at", "version"];

/// A product in the catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    #[schema(value_type = String, format = Uuid)]
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Exact decimal in the currency's major unit, as a string: `"19.99"`.
    #[schema(value_type = String, example = "19.99")]
    pub price: Price,
    /// ISO 4217 code.
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub low_stock_threshold: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Starts at 1 and grows by one on every change; the `ETag`.
    pub version: u64,
}

/// Everything a client sets on a product: the body of create and replace.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductDraft {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Price,
    pub currency: Currency,
    pub category: String,
    pub supplier_id: Option<String>,
    pub image_url: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub low_stock_threshold: u32,
}

/// A partial update: absent fields stay as they are; `null` clears an
/// optional field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProductPatch {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<Price>,
    pub currency: Option<Currency>,
    pub category: Option<String>,
    pub supplier_id: Option<Option<String>>,
    pub image_url: Option<Option<String>>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub low_stock_threshold: Option<u32>,
}

/// Whether a body creates a product or replaces one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftMode {
    Create,
    Replace,
}

impl ProductDraft {
    /// Parses a create or replace body.
    pub fn parse(body: &Value, mode: DraftMode) -> Result<Self, ValidationErrors> {
        let mut r = FieldReader::new(body)?;
        match mode {
            DraftMode::Create => r.deny_read_only(READ_ONLY),
            DraftMode::Replace => {
                for f in READ_ONLY {
                    r.raw(f);
                }
            }
        }
        let sku = sku(&mut r, true);
        let name = r.string("name", true, NAME_LEN);
        let description = r.string("description", false, DESCRIPTION_LEN);
        let price = price(&mut r, true);
        let currency = currency(&mut r, true);
        let category = category(&mut r, true);
        let supplier_id = r.string("supplier_id", false, SUPPLIER_LEN);
        let image_url = image_url(&mut r);
        let attributes = attributes(&mut r);
        let low_stock_threshold = threshold(&mut r);
        r.deny_unknown();
        let errors = r.errors;
        match (sku, name, price, currency, category) {
            (Some(sku), Some(name), Some(price), Some(currency), Some(category))
                if errors.is_empty() =>
            {
                Ok(Self {
                    sku,
                    name,
                    description: description.unwrap_or_default(),
                    price,
                    currency,
                    category,
                    supplier_id,
                    image_url,
                    attributes: attributes.unwrap_or_default(),
                    low_stock_threshold: low_stock_threshold.unwrap_or(DEFAULT_LOW_STOCK_THRESHOLD),
                })
            }
            _ => Err(errors),
        }
    }

    /// The product this draft makes, new.
    pub fn into_product(self, id: ProductId, now: OffsetDateTime) -> Product {
        Product {
            id,
            sku: self.sku,
            name: self.name,
            description: self.description,
            price: self.price,
            currency: self.currency,
            category: self.category,
            supplier_id: self.supplier_id,
            image_url: self.image_url,
            attributes: self.attributes,
            low_stock_threshold: self.low_stock_threshold,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

impl ProductPatch {
    pub fn parse(body: &Value) -> Result<Self, ValidationErrors> {
        let mut r = FieldReader::new(body)?;
        for f in READ_ONLY {
            r.raw(f);
        }
        for required in ["sku", "name", "price", "currency", "category"] {
            if r.is_null(required) {
                r.errors.push(required, "cannot be null");
            }
        }
        let patch = Self {
            sku: sku(&mut r, false),
            name: r.string("name", false, NAME_LEN),
            description: if r.is_null("description") {
                r.raw("description");
                Some(String::new())
            } else {
                r.string("description", false, DESCRIPTION_LEN)
            },
            price: price(&mut r, false),
            currency: currency(&mut r, false),
            category: category(&mut r, false),
            supplier_id: nullable(&mut r, "supplier_id", |r| {
                r.string("supplier_id", false, SUPPLIER_LEN)
            }),
            image_url: nullable(&mut r, "image_url", image_url),
            attributes: attributes(&mut r),
            low_stock_threshold: threshold(&mut r),
        };
        r.deny_unknown();
        r.errors.into_result(patch)
    }

    /// Applies the patch to a product (without touching its version or times).
    pub fn apply(self, p: &mut Product) {
        if let Some(v) = self.sku {
            p.sku = v;
        }
        if let Some(v) = self.name {
            p.name = v;
        }
        if let Some(v) = self.description {
            p.description = v;
        }
        if let Some(v) = self.price {
            p.price = v;
        }
        if let Some(v) = self.currency {
            p.currency = v;
        }
        if let Some(v) = self.category {
            p.category = v;
        }
        if let Some(v) = self.supplier_id {
            p.supplier_id = v;
        }
        if let Some(v) = self.image_url {
            p.image_url = v;
        }
        if let Some(v) = self.attributes {
            p.attributes = v;
        }
        if let Some(v) = self.low_stock_threshold {
            p.low_stock_threshold = v;
        }
    }
}

impl Product {
    /// Replaces every client-set field with the draft's.
    pub fn replace_with(&mut self, d: ProductDraft) {
        *self = Product {
            id: self.id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            ..d.into_product(self.id, self.created_at)
        };
    }
}

/// `Some(None)` for an explicit null, `Some(Some(v))` for a value, `None` if absent.
fn nullable<T>(
    r: &mut FieldReader<'_>,
    name: &'static str,
    read: impl FnOnce(&mut FieldReader<'_>) -> Option<T>,
) -> Option<Option<T>> {
    if r.is_null(name) {
        r.raw(name);
        Some(None)
    } else {
        read(r).map(Some)
    }
}

fn sku(r: &mut FieldReader<'_>, required: bool) -> Option<String> {
    let s = r.string("sku", required, SKU_LEN)?;
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Some(s)
    } else {
        r.errors
            .push("sku", "may contain only letters, digits, '-', '_' and '.'");
        None
    }
}

fn category(r: &mut FieldReader<'_>, required: bool) -> Option<String> {
    let s = r.string("category", required, CATEGORY_LEN)?;
    if s.contains('#') {
        r.errors.push("category", "must not contain '#'");
        return None;
    }
    Some(s)
}

fn price(r: &mut FieldReader<'_>, required: bool) -> Option<Price> {
    match r.raw("price") {
        None => {
            if required {
                r.errors.push("price", "is required");
            }
            None
        }
        Some(Value::String(s)) if !is_plain_decimal(s) => {
            r.errors.push(
                "price",
                "must be a plain decimal string such as \"19.99\" (at most 3 decimals, no sign, no leading zero, at most 999999999.999)",
            );
            None
        }
        Some(Value::String(s)) => match Price::parse(s) {
            Ok(p) => Some(p),
            Err(e) => {
                r.errors.push("price", e);
                None
            }
        },
        Some(Value::Number(_)) => {
            r.errors.push(
                "price",
                "must be a decimal string such as \"19.99\" (JSON numbers are refused: they are floats)",
            );
            None
        }
        Some(other) => {
            r.errors.push(
                "price",
                format!(
                    "must be a decimal string such as \"19.99\", not {}",
                    kind(other)
                ),
            );
            None
        }
    }
}

/// [`PRICE_PATTERN`], by hand.
pub fn is_plain_decimal(s: &str) -> bool {
    let (whole, fraction) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(whole)
        && whole.len() <= 9
        && (whole == "0" || !whole.starts_with('0'))
        && fraction.is_none_or(|f| digits(f) && f.len() <= 3)
}

fn currency(r: &mut FieldReader<'_>, required: bool) -> Option<Currency> {
    let s = r.string("currency", required, Len { min: 1, max: 3 })?;
    match Currency::parse(&s) {
        Ok(c) => Some(c),
        Err(e) => {
            r.errors.push("currency", e);
            None
        }
    }
}

fn image_url(r: &mut FieldReader<'_>) -> Option<String> {
    let s = r.string("image_url", false, IMAGE_URL_LEN)?;
    if s.starts_with("https://") || s.starts_with("http://") || s.starts_with('/') {
        Some(s)
    } else {
        r.errors.push(
            "image_url",
            "must be an http(s) URL or a path starting with '/'",
        );
        None
    }
}

fn attributes(r: &mut FieldReader<'_>) -> Option<BTreeMap<String, String>> {
    r.string_map(
        "attributes",
        MAX_ATTRIBUTES,
        ATTRIBUTE_KEY_LEN,
        ATTRIBUTE_VALUE_LEN,
    )
}

fn threshold(r: &mut FieldReader<'_>) -> Option<u32> {
    r.integer("low_stock_threshold", false, 0, MAX_LOW_STOCK_THRESHOLD)
        .map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> Value {
        json!({
            "sku": "TEE-RED-M", "name": "Red tee", "price": "19.99", "currency": "EUR",
            "category": "shirts", "attributes": {"colour": "red"}
        })
    }

    #[test]
    fn a_valid_body_parses_with_defaults() {
        let d = ProductDraft::parse(&valid(), DraftMode::Create).unwrap();
        assert_eq!(d.sku, "TEE-RED-M");
        assert_eq!(d.price.to_string(), "19.99");
        assert_eq!(d.low_stock_threshold, DEFAULT_LOW_STOCK_THRESHOLD);
        assert_eq!(d.attributes["colour"], "red");
    }

    #[test]
    fn every_field_at_fault_is_named() {
        let body = json!({
            "sku": "bad sku!", "name": "  ", "price": 19.99, "currency": "euro",
            "low_stock_threshold": -1, "attributes": {"k": 3}, "colour": "red", "id": "x"
        });
        let errors = ProductDraft::parse(&body, DraftMode::Create).unwrap_err();
        let mut fields: Vec<&str> = errors.fields().collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "attributes.k",
                "category",
                "colour",
                "currency",
                "id",
                "low_stock_threshold",
                "name",
                "price",
                "sku"
            ]
        );
    }

    #[test]
    fn a_patch_clears_the_optional_fields_with_null() {
        let patch = ProductPatch::parse(
            &json!({"description": null, "supplier_id": null, "image_url": null}),
        )
        .unwrap();
        assert_eq!(patch.description.as_deref(), Some(""));
        assert_eq!(patch.supplier_id, Some(None));
        assert_eq!(patch.image_url, Some(None));
    }

    #[test]
    fn over_long_strings_and_absurd_prices_are_refused() {
        let mut body = valid();
        body["name"] = json!("x".repeat(201));
        body["price"] = json!("99999999999");
        let errors = ProductDraft::parse(&body, DraftMode::Create).unwrap_err();
        let fields: Vec<&str> = errors.fields().collect();
        assert_eq!(fields, ["name", "price"]);
    }

    #[test]
    fn replace_ignores_read_only_fields_but_create_refuses_them() {
        let mut body = valid();
        body["version"] = json!(3);
        assert!(ProductDraft::parse(&body, DraftMode::Replace).is_ok());
        assert_eq!(
            ProductDraft::parse(&body, DraftMode::Create)
                .unwrap_err()
                .fields()
                .collect::<Vec<_>>(),
            ["version"]
        );
    }

    #[test]
    fn patch_sets_clears_and_refuses_null_required_fields() {
        let mut p = ProductDraft::parse(&valid(), DraftMode::Create)
            .unwrap()
            .into_product(ProductId::new(), crate::now());
        p.image_url = Some("/img/1.png".into());
        ProductPatch::parse(&json!({"name": "Blue tee", "image_url": null}))
            .unwrap()
            .apply(&mut p);
        assert_eq!(p.name, "Blue tee");
        assert_eq!(p.image_url, None);
        assert_eq!(p.sku, "TEE-RED-M");
        let e = ProductPatch::parse(&json!({"name": null})).unwrap_err();
        assert_eq!(e.fields().collect::<Vec<_>>(), ["name"]);
    }

    #[test]
    fn a_non_object_body_is_one_error() {
        assert!(ProductDraft::parse(&json!([1]), DraftMode::Create).is_err());
    }
}
