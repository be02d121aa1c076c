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
