//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::routes::params::{MAX_CURSOR_LEN, NAME_PARAM_LEN};
use crate::routes::{
    analytics, auth, basket, events, images, inventory, me, model, oidc, ops, orders, products,
    recs, search, supplier, suppliers,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "shopstream", description = "Live inventory, analytics and recommendations for an online shop. \
        Errors are RFC 9457 problem documents."),
    paths(
        auth::register, auth::login, auth::refresh, oidc::info, oidc::login, oidc::callback, oidc::logout,
        me::get_me, me::patch_me, me::delete_me,
        products::list_products, products::list_categories, products::create_product, products::get_product,
        products::replace_product, products::patch_product, products::delete_product,
        search::search,
        events::collect,
        inventory::get_inventory, inventory::list_inventory,
        analytics::summary, analytics::product, analytics::trending, analytics::dead_letters, analytics::replay_dead_letter, analytics::leases,
        images::put_image, images::get_image,
        basket::get_basket, basket::add_item, basket::set_item, basket::remove_item, basket::clear_basket,
        orders::checkout, orders::list_orders, orders::get_order, orders::cancel_order, orders::set_status, orders::admin_orders,
        supplier::list_alerts, supplier::ack_alert, supplier::list_products,
        suppliers::list_suppliers, suppliers::create_supplier, suppliers::get_supplier, suppliers::replace_supplier,
        suppliers::delete_supplier, suppliers::rotate_webhook_secret, suppliers::my_supplier,
        recs::recommendations, recs::similar, recs::bought_together, recs::basket_suggestions, recs::trending, model::model_info, model::train, model::attribution,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(crate::Problem, domain::Product, domain::Role, domain::user::Address, oidc::Page)),
    modifiers(&Bearer),
    tags((name = "auth"), (name = "me"), (name = "products"), (name = "events"), (name = "inventory"),
        (name = "analytics"), (name = "basket"), (name = "orders"), (name = "supplier"), (name = "recommendations"), (name = "admin"), (name = "ops")),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The served document: [`ApiDoc`] with the error responses every operation
/// can give added where its annotation does not list them, and every
/// problem response typed `application/problem+json`. Built once.
pub fn spec() -> &'static serde_json::Value {
    // Served as JSON: the completed document uses JSON Schema that utoipa's
    // own types do not model (`propertyNames`, type lists).
    static SPEC: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        complete(&mut doc);
        doc
    });
    &SPEC
}

const PROBLEM: &str = "#/components/schemas/Problem";

/// Unpadded base64url, as `routes::params::encode_cursor` writes it (the
/// last character carries no stray bits).
const CURSOR_PATTERN: &str =
    "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?$";

/// Which error responses an operation can give, beyond those its annotation
/// names: what the layers under every route answer (a timeout, an internal
/// error, an unavailable store), the body's (malformed, too large, not
/// JSON, invalid), the parameters' (invalid: 422; a path id that names
/// nothing: 404), authentication's (401, 403) and the limited doors' (429).
fn complete(doc: &mut serde_json::Value) {
    use serde_json::{Value, json};
    product_bodies(doc);
    supplier_bodies(doc);
    body_rules(doc);
    // Request bodies take no fields but their own (the handlers refuse the
    // rest, naming each).
    let bodies: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
        .filter_map(Value::as_object)
        .flat_map(|ops| ops.values())
        .filter_map(|op| op.pointer("/requestBody/content/application~1json/schema/$ref"))
        .filter_map(Value::as_str)
        .filter_map(|r| r.strip_prefix("#/components/schemas/"))
        .map(str::to_owned)
        .collect();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for name in bodies {
            if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
                s.insert("additionalProperties".into(), Value::Bool(false));
            }
        }
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let api = path.starts_with("/api/");
            let has_body = op.contains_key("requestBody");
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let in_path = path.contains('{');
            let limited = matches!(
                (method.as_str(), path.as_str()),
                (
                    "post",
                    "/api/auth/login" | "/api/auth/register" | "/api/auth/refresh" | "/api/events"
                )
            );
            let mut codes: Vec<(&str, &str)> = vec![
                ("408", "The request took too long"),
                ("500", "An internal error (the cause is logged)"),
                (
                    "503",
                    "A service the request needs is unavailable; try again (Retry-After when busy)",
                ),
            ];
            if api {
                codes.push(("422", "Invalid parameters or fields; `errors` names each"));
            }
            if has_body {
                codes.push(("400", "Malformed JSON"));
                codes.push(("413", "The body is too large"));
                codes.push(("415", "The body is not `application/json`"));
            }
            if secured {
                codes.push(("401", "Missing, invalid or expired bearer token"));
                codes.push(("403", "The caller's role may not do this"));
            }
            if in_path || secured {
                codes.push((
                    "404",
                    "Nothing at this id (or the caller's own record is gone)",
                ));
            }
            // The shared query parameters' rules (routes::params), declared
            // once for every operation that takes them.
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for p in params.iter_mut() {
                    let rule = match (p["in"].as_str(), p["name"].as_str()) {
                        (Some("query"), Some("limit")) => {
                            Some(json!({"type": "integer", "minimum": 1, "maximum": 100}))
                        }
                        (Some("query"), Some("minutes")) => {
                            Some(json!({"type": "integer", "minimum": 1, "maximum": 1440}))
                        }
                        (Some("query"), Some("hours")) => {
                            Some(json!({"type": "integer", "minimum": 1, "maximum": 168}))
                        }
                        (Some("query"), Some("window")) => {
                            Some(json!({"type": "string", "enum": ["1h", "24h"]}))
                        }
                        (Some("query"), Some("q")) if path == "/api/search" => Some(json!({
                            "type": "string", "maxLength": search::QUERY_LEN,
                        })),
                        (Some("query"), Some("min_price" | "max_price")) => Some(json!({
                            "type": "string", "pattern": search::PRICE_PATTERN, "example": "19.99",
                        })),
                        (Some("query"), Some("offset")) => Some(json!({
                            "type": "integer", "minimum": 0, "maximum": ::search::index::MAX_OFFSET,
                        })),
                        (Some("query"), Some("q")) => Some(json!({
                            "type": "string", "maxLength": 100,
                            // something besides white space (it is trimmed)
                            "pattern": format!(
                                r"^[\s\S]*[^{}\t\n\u000b\u000c\r\u0085][\s\S]*$",
                                domain::validate::TRIMMED
                            )
                        })),
                        (Some("query"), Some("category" | "supplier_id")) => Some(json!({
                            "type": "string", "minLength": 1, "maxLength": NAME_PARAM_LEN
                        })),
                        (Some("query"), Some("cursor")) => Some(json!({
                            "type": "string", "minLength": 1, "maxLength": MAX_CURSOR_LEN,
                            "description": "a next_cursor this API returned",
                            "pattern": CURSOR_PATTERN
                        })),
                        (Some("query"), Some("context_product")) => {
                            Some(json!({"type": "string", "format": "uuid"}))
                        }
                        (Some("query"), Some("status")) => Some(json!({
                            "type": "string",
                            "enum": commerce::order::Status::ALL.map(|s| s.as_str()),
                        })),
                        (Some("header"), Some("x-session-id")) => {
                            Some(json!({"type": "string", "format": "uuid"}))
                        }
                        _ => None,
                    };
                    if let Some(rule) = rule {
                        p["schema"] = rule;
                    }
                }
            }
            if limited {
                codes.push(("429", "Over a rate limit; see Retry-After"));
            }
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses is an object");
            // Problem responses are problem documents.
            for response in responses.values_mut() {
                let Some(content) = response.get_mut("content").and_then(Value::as_object_mut)
                else {
                    continue;
                };
                let is_problem = content
                    .get("application/json")
                    .and_then(|c| c.pointer("/schema/$ref"))
                    .and_then(Value::as_str)
                    == Some(PROBLEM);
                if is_problem && let Some(c) = content.remove("application/json") {
                    content.insert("application/problem+json".into(), c);
                }
            }
            for (code, description) in codes {
                responses.entry(code).or_insert_with(|| {
                    json!({
                        "description": description,
                        "content": {"application/problem+json": {"schema": {"$ref": PROBLEM}}}
                    })
                });
            }
        }
    }
}

/// `v`, or null.
fn nullable(mut v: serde_json::Value) -> serde_json::Value {
    v["type"] = serde_json::json!([v["type"].clone(), "null"]);
    v
}

/// The rules of the other bodies' fields that their annotations cannot
/// state (patterns live in `domain::validate`), the body of `PATCH
/// /api/me`, and the bounds of the events batch.
fn body_rules(doc: &mut serde_json::Value) {
    use domain::validate::{TRIMMED, text_or_empty_pattern, text_pattern};
    use serde_json::{Value, json};
    let text = |min: usize, max: usize| {
        let pattern = if min > 0 {
            text_pattern()
        } else {
            text_or_empty_pattern()
        };
        json!({"type": "string", "minLength": min, "maxLength": max, "pattern": pattern})
    };
    let address = json!({
        "type": "object", "additionalProperties": false,
        "required": ["line1", "city", "postal_code", "country"],
        "properties": {
            "line1": text(1, 200), "line2": nullable(text(1, 200)), "city": text(1, 200),
            "postal_code": text(1, 20),
            "country": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1 alpha-2"},
        }
    });
    let me = json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "name": nullable(text(1, 200)),
            "shipping_address": {"oneOf": [address, {"type": "null"}]},
            "preferences": {
                "type": ["object", "null"], "maxProperties": 50,
                "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": text_or_empty_pattern()},
                "additionalProperties": text(0, 512),
            },
        }
    });
    let rules: [(&str, &str, Value); 10] = [
        ("RegisterRequest", "name", text(1, 200)),
        ("LoginRequest", "email", text(1, 254)),
        ("RefreshRequest", "refresh_token", text(1, 4096)),
        ("AddItem", "recommendation_id", nullable(text(1, 128))),
        (
            "CheckoutRequest",
            "card_number",
            json!({"type": "string", "maxLength": 32,
            "pattern": format!("^[{TRIMMED}]*[0-9]{{13,19}}[{TRIMMED}]*$"),
            "description": "13 to 19 digits passing the Luhn check"}),
        ),
        (
            "CheckoutRequest",
            "recommendation_id",
            nullable(text(1, 128)),
        ),
        (
            "SetStatus",
            "status",
            json!({"type": "string",
            "enum": commerce::order::Status::ALL.map(|s| s.as_str())}),
        ),
        ("SetStatus", "carrier", nullable(text(1, 64))),
        ("SetStatus", "tracking_number", nullable(text(1, 64))),
        ("SetStatus", "note", nullable(text(1, 500))),
    ];
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (schema, field, rule) in rules {
            if let Some(props) = schemas
                .get_mut(schema)
                .and_then(|s| s.get_mut("properties"))
                .and_then(Value::as_object_mut)
            {
                props.insert(field.into(), rule);
            }
        }
        if let Some(s) = schemas.get_mut("SetStatus") {
            // A shipment names both or neither.
            s["dependentRequired"] =
                json!({"carrier": ["tracking_number"], "tracking_number": ["carrier"]});
        }
        schemas.insert("MePatch".into(), me);
    }
    if let Some(body) = doc["paths"]["/api/me"]["patch"]
        .pointer_mut("/requestBody/content/application~1json/schema")
    {
        *body = json!({"$ref": "#/components/schemas/MePatch"});
    }
    if let Some(body) = doc["paths"]["/api/events"]["post"]
        .pointer_mut("/requestBody/content/application~1json/schema")
    {
        body["minItems"] = json!(1);
        // The default of `max_events_per_request`.
        body["maxItems"] = json!(500);
    }
    // The image types the upload takes (checked again by content).
    if let Some(content) = doc["paths"]["/api/products/{id}/image"]["put"]
        .pointer_mut("/requestBody/content")
        .and_then(Value::as_object_mut)
        && let Some(binary) = content.remove("image/*")
    {
        for t in ["image/jpeg", "image/png", "image/webp"] {
            content.insert(t.into(), binary.clone());
        }
    }
}

/// The bodies of product create, replace and patch, from the parsers' own
/// limits (`domain::product`), in place of the bare object the annotations
/// name.
fn product_bodies(doc: &mut serde_json::Value) {
    use domain::{
        product::*,
        validate::{text_or_empty_pattern, text_pattern},
    };
    use serde_json::{Value, json};
    let text = |len: domain::validate::Len, pattern: String| json!({"type": "string", "maxLength": len.max, "pattern": pattern});
    let fields = |optional_nullable: bool| {
        let opt = |v: Value| if optional_nullable { nullable(v) } else { v };
        json!({
            "sku": text(SKU_LEN, sku_pattern()),
            "name": text(NAME_LEN, text_pattern()),
            "price": {"type": "string", "pattern": PRICE_PATTERN, "example": "19.99",
                "description": "exact decimal in the currency's major unit"},
            "currency": {"type": "string", "pattern": CURRENCY_PATTERN, "example": "EUR"},
            "category": text(CATEGORY_LEN, category_pattern()),
            "description": nullable(text(DESCRIPTION_LEN, text_or_empty_pattern())),
            "supplier_id": nullable(text(SUPPLIER_LEN, text_pattern())),
            "image_url": nullable(text(IMAGE_URL_LEN, image_url_pattern())),
            "attributes": opt(json!({
                "type": "object",
                "maxProperties": MAX_ATTRIBUTES,
                "propertyNames": {"minLength": ATTRIBUTE_KEY_LEN.min, "maxLength": ATTRIBUTE_KEY_LEN.max,
                    "pattern": text_or_empty_pattern()},
                "additionalProperties": text(ATTRIBUTE_VALUE_LEN, text_or_empty_pattern()),
            })),
            "low_stock_threshold": opt(json!({"type": "integer", "minimum": 0,
                "maximum": MAX_LOW_STOCK_THRESHOLD, "default": DEFAULT_LOW_STOCK_THRESHOLD})),
        })
    };
    let required = json!(["sku", "name", "price", "currency", "category"]);
    // Replace and patch take the server's own fields back unchanged (and
    // ignore them); create refuses them.
    let with_read_only = |mut props: Value| {
        for f in ["id", "created_at", "updated_at", "version"] {
            props[f] = json!({"description": "read-only: ignored"});
        }
        props
    };
    let create = json!({"type": "object", "additionalProperties": false,
        "required": required, "properties": fields(true)});
    let replace = json!({"type": "object", "additionalProperties": false,
        "required": required, "properties": with_read_only(fields(true))});
    let patch = json!({"type": "object", "additionalProperties": false,
        "description": "any subset of the create fields; null clears description, supplier_id and image_url",
        "properties": with_read_only(fields(true))});
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert("ProductCreate".into(), create);
        schemas.insert("ProductReplace".into(), replace);
        schemas.insert("ProductPatch".into(), patch);
    }
    for (path, method, name) in [
        ("/api/products", "post", "ProductCreate"),
        ("/api/products/{id}", "put", "ProductReplace"),
        ("/api/products/{id}", "patch", "ProductPatch"),
    ] {
        if let Some(body) =
            doc["paths"][path][method].pointer_mut("/requestBody/content/application~1json/schema")
        {
            *body = json!({"$ref": format!("#/components/schemas/{name}")});
        }
    }
}

/// A documented `https://` webhook URL: a host name (not an address), an
/// optional port and path and query; what `commerce::suppliers` accepts by
/// default (`webhook_allow_http` off).
pub const WEBHOOK_URL_PATTERN: &str = concat!(
    r"^https://[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    r"(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?(\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?$"
);

/// The bodies of supplier create and replace (`commerce::suppliers`).
fn supplier_bodies(doc: &mut serde_json::Value) {
    use domain::validate::text_pattern;
    use serde_json::{Value, json};
    let text = |max: usize| json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": text_pattern()});
    let email = json!({"type": ["string", "null"], "maxLength": 254,
        "pattern": r"^[^@\s\u0000-\u001f\u007f-\u009f]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"});
    let url = json!({"type": ["string", "null"], "maxLength": 2048, "pattern": WEBHOOK_URL_PATTERN,
        "description": "https:// (http:// too where the server allows it: webhook_allow_http)"});
    let create = json!({"type": "object", "additionalProperties": false, "required": ["id", "name"],
        "properties": {"id": text(64), "name": text(200), "contact_email": email, "webhook_url": url}});
    let replace = json!({"type": "object", "additionalProperties": false, "required": ["name"],
        "properties": {"name": text(200), "contact_email": email, "webhook_url": url}});
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert("SupplierCreate".into(), create);
        schemas.insert("SupplierReplace".into(), replace);
    }
    for (path, method, name) in [
        ("/api/admin/suppliers", "post", "SupplierCreate"),
        ("/api/admin/suppliers/{id}", "put", "SupplierReplace"),
    ] {
        if let Some(body) =
            doc["paths"][path][method].pointer_mut("/requestBody/content/application~1json/schema")
        {
            *body = json!({"$ref": format!("#/components/schemas/{name}")});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod webhook_urls {
        use proptest::prelude::*;

        proptest! {
            /// Every URL the documented pattern allows, the parser accepts.
            #[test]
            fn the_documented_pattern_is_what_the_parser_accepts(
                url in super::WEBHOOK_URL_PATTERN.trim_start_matches('^').trim_end_matches('$')
            ) {
                prop_assert!(url.len() > 2048 || commerce::suppliers::check_webhook_url(&url, false).is_ok(), "{url}");
            }
        }
    }

    #[test]
    fn every_operation_documents_its_error_responses_as_problems() {
        let doc = spec();
        let login = &doc["paths"]["/api/auth/login"]["post"]["responses"];
        for code in [
            "400", "401", "408", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(
                login[code]["content"]["application/problem+json"].is_object(),
                "login {code}: {login}"
            );
        }
        let product = &doc["paths"]["/api/products/{id}"]["get"]["responses"];
        assert!(product["404"]["content"]["application/problem+json"].is_object());
        assert!(product["404"]["content"]["application/json"].is_null());
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["422"].is_null());
    }

    /// The product body's documented rules (pattern and maxLength) accept
    /// exactly what the parser accepts, field by field.
    mod product_rules {
        use domain::product::{DraftMode, ProductDraft};
        use proptest::prelude::*;
        use serde_json::{Value, json};

        fn schema_accepts(field: &str, value: &str) -> bool {
            let prop =
                &super::spec()["components"]["schemas"]["ProductCreate"]["properties"][field];
            let pattern = regex::Regex::new(prop["pattern"].as_str().unwrap()).unwrap();
            let max = prop["maxLength"]
                .as_u64()
                .map_or(usize::MAX, |m| m as usize);
            pattern.is_match(value) && value.chars().count() <= max
        }

        fn parser_accepts(field: &str, value: &str) -> bool {
            let mut body = json!({"sku": "S-1", "name": "n", "price": "1.00", "currency": "EUR",
                "category": "c", "image_url": "/i.png"});
            body[field] = Value::String(value.to_owned());
            match ProductDraft::parse(&body, DraftMode::Create) {
                Ok(_) => true,
                Err(e) => {
                    assert!(e.fields().all(|f| f == field), "{e}");
                    false
                }
            }
        }

        fn strings() -> impl Strategy<Value = String> {
            let alphabet = prop::sample::select(vec![
                'a', 'Z', '0', '1', '9', '.', '-', '_', '#', '/', ':', 'h', 't', 'p', 's', 'é',
                ' ', '\u{a0}', '\u{2003}', '\u{3000}', '\t', '\n', '\u{85}', '\u{1c}', '\u{0}',
                '\u{7f}', '\u{200b}', '\u{feff}',
            ]);
            let prefix = prop::sample::select(vec!["", "", "http://", "https://", "0.", "12", " "]);
            (prefix, prop::collection::vec(alphabet, 0..80))
                .prop_map(|(p, cs)| format!("{p}{}", cs.into_iter().collect::<String>()))
        }

        proptest! {
            #[test]
            fn schema_and_parser_agree(field in prop::sample::select(vec![
                "sku", "name", "price", "currency", "category", "description", "supplier_id", "image_url",
            ]), value in strings()) {
                prop_assert_eq!(schema_accepts(field, &value), parser_accepts(field, &value),
                    "{} = {:?}", field, value);
            }
        }

        #[test]
        fn known_values() {
            for (field, value, ok) in [
                ("price", "19.99", true),
                ("price", "0", true),
                ("price", "999999999.999", true),
                ("price", "019.99", false),
                ("price", "1.2345", false),
                ("price", "-1", false),
                ("price", " 1", false),
                ("sku", " TEE-1 ", true),
                ("sku", "TEE 1", false),
                ("name", "   ", false),
                ("name", "Tee\n", false),
                ("category", "a#b", false),
                ("currency", "EUR", true),
                ("currency", "eur", false),
            ] {
                assert_eq!(schema_accepts(field, value), ok, "{field} = {value:?}");
                assert_eq!(parser_accepts(field, value), ok, "{field} = {value:?}");
            }
        }
    }
}
