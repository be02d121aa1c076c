//! First-start work: the first admin, and a small demo catalogue in an empty
//! store. Each runs once per store, remembered by a marker in the meta table.

use domain::{Email, EventPayload, ProductDraft, ProductId, Role, product::DraftMode};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::json;
use storage::{Cond, Key, Table};

use crate::{AppState, error::ApiError, routes::auth::create_user};

/// The admin made on first start when none is configured.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@shopstream.local";

fn marker(name: &str) -> Key {
    Key::new("bootstrap", name)
}

async fn mark(state: &AppState, name: &str) -> anyhow::Result<bool> {
    match state
        .bootstrap_store()
        .put(Table::Meta, marker(name).to_item(), Some(Cond::NotExists))
        .await
    {
        Ok(()) => Ok(true),
        Err(storage::StoreError::ConditionFailed) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn marked(state: &AppState, name: &str) -> anyhow::Result<bool> {
    Ok(state
        .bootstrap_store()
        .get(Table::Meta, &marker(name))
        .await?
        .is_some())
}

/// What the admin bootstrap did.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminBootstrap {
    /// An admin was bootstrapped before.
    AlreadyDone,
    /// The configured admin was created (or existed).
    Configured(String),
    /// An admin was made with a generated password, to be shown once.
    Generated { email: String, password: String },
}

/// Makes sure the store has its first admin.
pub async fn ensure_admin(
    state: &AppState,
    email: Option<&str>,
    password: Option<&str>,
) -> anyhow::Result<AdminBootstrap> {
    if marked(state, "admin").await? {
        return Ok(AdminBootstrap::AlreadyDone);
    }
    let (email, password, generated) = match (email, password) {
        (Some(e), Some(p)) => (e.to_owned(), p.to_owned(), false),
        (None, None) => (
            DEFAULT_ADMIN_EMAIL.to_owned(),
            Alphanumeric.sample_string(&mut rand::rng(), 24),
            true,
        ),
        _ => anyhow::bail!("admin_email and admin_password must be set together"),
    };
    let parsed = Email::parse(&email).map_err(|e| anyhow::anyhow!("admin_email {e}"))?;
    domain::user::check_password(&password).map_err(|e| anyhow::anyhow!("admin_password {e}"))?;
    match create_user(
        state,
        parsed,
        password.clone(),
        "Administrator".into(),
        Role::Admin,
        None,
    )
    .await
    {
        Ok(_) | Err(ApiError::Conflict(_)) => {}
        Err(e) => anyhow::bail!("cannot create the admin: {e}"),
    }
    mark(state, "admin").await?;
    Ok(if generated {
        AdminBootstrap::Generated { email, password }
    } else {
        AdminBootstrap::Configured(email)
    })
}

/// Seeds a small demo catalogue if the store has never had one and is empty.
/// Returns how many products it made.
pub async fn seed_demo_catalogue(state: &AppState) -> anyhow::Result<usize> {
    if marked(state, "demo-catalogue").await? || !state.products.is_empty().await? {
        return Ok(0);
    }
    let demo = [
        (
            "TEE-CLASSIC-WHT",
            "Classic white tee",
            "19.99",
            "shirts",
            "acme-textiles",
            10,
        ),
        (
            "TEE-CLASSIC-BLK",
            "Classic black tee",
            "19.99",
            "shirts",
            "acme-textiles",
            10,
        ),
        (
            "HOODIE-GRY",
            "Grey zip hoodie",
            "49.00",
            "shirts",
            "acme-textiles",
            5,
        ),
        (
            "RUN-SHOE-42",
            "Trail running shoe",
            "89.90",
            "shoes",
            "stride-footwear",
            3,
        ),
        (
            "SNEAKER-CNV",
            "Canvas sneaker",
            "54.50",
            "shoes",
            "stride-footwear",
            5,
        ),
        (
            "SOCK-WOOL-3",
            "Merino socks, 3 pairs",
            "24.00",
            "accessories",
            "stride-footwear",
            20,
        ),
        (
            "CAP-BASEBALL",
            "Baseball cap",
            "15.00",
            "accessories",
            "acme-textiles",
            10,
        ),
        (
            "BAG-TOTE",
            "Organic cotton tote bag",
            "12.50",
            "accessories",
            "acme-textiles",
            10,
        ),
        (
            "MUG-ENAMEL",
            "Enamel camping mug",
            "11.90",
            "home",
            "hearth-goods",
            8,
        ),
        (
            "CANDLE-CEDAR",
            "Cedar scented candle",
            "18.00",
            "home",
            "hearth-goods",
            8,
        ),
        (
            "BLANKET-WOOL",
            "Wool throw blanket",
            "79.00",
            "home",
            "hearth-goods",
            2,
        ),
        (
            "BOTTLE-STEEL",
            "Insulated steel bottle",
            "27.50",
            "outdoor",
            "hearth-goods",
            6,
        ),
    ];
    let mut made = 0;
    for (sku, name, price, category, supplier, threshold) in demo {
        let body = json!({
            "sku": sku, "name": name, "price": price, "currency": "EUR", "category": category,
            "supplier_id": supplier, "low_stock_threshold": threshold,
            "description": format!("{name} from the shopstream demo catalogue."),
        });
        let draft = ProductDraft::parse(&body, DraftMode::Create)
            .map_err(|e| anyhow::anyhow!("demo product {sku}: {e}"))?;
        let product = draft.into_product(ProductId::new(), domain::now());
        match state.products.create(&product).await {
            Ok(()) => {
                made += 1;
                // Some stock, so the storefront has something to sell: a
                // few times the threshold, and the last ones just above it.
                let on_hand = if threshold <= 3 {
                    i64::from(threshold) + 1
                } else {
                    i64::from(threshold) * 3
                };
                let id = product.id;
                let events = [
                    domain::Event::new(
                        "bootstrap",
                        EventPayload::ProductUpserted(Box::new(product)),
                    ),
                    domain::Event::new(
                        "bootstrap",
                        EventPayload::StockCounted {
                            product_id: id,
                            on_hand,
                            sequence: 1,
                        },
                    ),
                ];
                state.events.publish(&events).await?;
            }
            Err(storage::products::ProductError::DuplicateSku(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    mark(state, "demo-catalogue").await?;
    Ok(made)
}
