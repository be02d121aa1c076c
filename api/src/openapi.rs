//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::routes::{
    analytics, auth, basket, events, images, inventory, me, model, ops, orders, products, recs,
    supplier,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "shopstream", description = "Live inventory, analytics and recommendations for an online shop. \
        Errors are RFC 9457 problem documents."),
    paths(
        auth::register, auth::login, auth::refresh,
        me::get_me, me::patch_me, me::delete_me,
        products::list_products, products::list_categories, products::create_product, products::get_product,
        products::replace_product, products::patch_product, products::delete_product,
        events::collect,
        inventory::get_inventory, inventory::list_inventory,
        analytics::summary, analytics::product, analytics::trending, analytics::dead_letters, analytics::replay_dead_letter, analytics::leases,
        images::put_image, images::get_image,
        basket::get_basket, basket::add_item, basket::set_item, basket::remove_item, basket::clear_basket,
        orders::checkout, orders::list_orders, orders::get_order, orders::cancel_order, orders::set_status, orders::admin_orders,
        supplier::list_alerts, supplier::ack_alert, supplier::list_products,
        recs::recommendations, recs::similar, recs::bought_together, recs::basket_suggestions, recs::trending, model::model_info, model::train, model::attribution,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(crate::Problem, domain::Product, domain::Role, domain::user::Address)),
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
pub fn spec() -> &'static utoipa::openapi::OpenApi {
    static SPEC: std::sync::LazyLock<utoipa::openapi::OpenApi> = std::sync::LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        complete(&mut doc);
        serde_json::from_value(doc).expect("the completed document reads back")
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
                        (Some("query"), Some("window")) => {
                            Some(json!({"type": "string", "enum": ["1h", "24h"]}))
                        }
                        (Some("query"), Some("q")) => {
                            Some(json!({"type": "string", "minLength": 1, "maxLength": 100}))
                        }
                        (Some("query"), Some("category")) => {
                            Some(json!({"type": "string", "minLength": 1, "maxLength": 64}))
                        }
                        (Some("query"), Some("cursor")) => Some(json!({
                            "type": "string",
                            "description": "a next_cursor this API returned",
                            "pattern": CURSOR_PATTERN
                        })),
                        (Some("query"), Some("context_product")) => {
                            Some(json!({"type": "string", "format": "uuid"}))
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_documents_its_error_responses_as_problems() {
        let doc = serde_json::to_value(spec()).unwrap();
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
}
