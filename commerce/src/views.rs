//! What the API shows and takes: baskets with live prices and stock, the
//! checkout request, pages of orders.

use domain::{Currency, Price};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::order::OrderSummary;

/// The buyer.
#[derive(Clone, Debug)]
pub struct Customer {
    pub user_id: String,
    pub email: Option<String>,
}

/// What the client sends to check out.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct CheckoutRequest {
    /// The card number (digits only). Only its last four digits are kept.
    pub card_number: String,
    /// The recommendation that led here, for attribution.
    #[serde(default)]
    pub recommendation_id: Option<String>,
}

/// A basket line as the API shows it: current price and live availability.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BasketLineView {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: Price,
    #[schema(value_type = String, example = "39.98")]
    pub line_total: Price,
    /// Units available right now.
    pub available: i64,
    /// Whether `available` covers `quantity`.
    pub in_stock: bool,
}

/// A basket as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BasketView {
    pub lines: Vec<BasketLineView>,
    /// Exact decimal sum of the lines.
    #[schema(value_type = String, example = "39.98")]
    pub total: Price,
    #[schema(value_type = Option<String>, example = "EUR")]
    pub currency: Option<Currency>,
    /// Units over all lines.
    pub items: i64,
    /// When the basket expires if left alone.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// One page of orders.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
