//! Why a basket change, a checkout or a status change was refused.

use serde::Serialize;
use storage::StoreError;

use crate::order::TransitionError;

/// Why a basket change was refused.
#[derive(Debug, thiserror::Error)]
pub enum BasketError {
    #[error("quantity must be between 1 and {max}")]
    Quantity { max: i64 },
    #[error("no product {0} in the catalogue (unknown or deleted)")]
    UnknownProduct(String),
    #[error("product {0} is not in the basket")]
    NotInBasket(String),
    #[error("a basket holds at most {0} products")]
    TooManyLines(usize),
    #[error("the basket is in {basket}; product {product_id} is priced in {product}")]
    Currency {
        product_id: String,
        basket: String,
        product: String,
    },
    #[error("the basket kept changing; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A product that checkout could not cover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shortage {
    pub product_id: String,
    pub requested: i64,
    pub available: i64,
}

/// Why checkout did not make an order.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the basket is empty")]
    EmptyBasket,
    #[error("products no longer in the catalogue: {0:?}")]
    UnknownProducts(Vec<String>),
    #[error("not enough stock")]
    OutOfStock(Vec<Shortage>),
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    #[error("the basket mixes currencies")]
    MixedCurrencies,
    #[error("the stock kept changing; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a status change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no such order")]
    NotFound,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("a shipped order needs a carrier and a tracking number")]
    ShipmentMissing,
    #[error("the order kept changing; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}
