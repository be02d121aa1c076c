//! Orders and their state machine. Pure: no I/O.

use domain::{Currency, Price};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where an order is in its life.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stock is reserved; the payment has not been settled yet.
    PendingPayment,
    Paid,
    Packed,
    Shipped,
    Delivered,
    Cancelled,
    PaymentFailed,
    Refunded,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::PendingPayment,
        Status::Paid,
        Status::Packed,
        Status::Shipped,
        Status::Delivered,
        Status::Cancelled,
        Status::PaymentFailed,
        Status::Refunded,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Status::PendingPayment => "pending_payment",
            Status::Paid => "paid",
            Status::Packed => "packed",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::PaymentFailed => "payment_failed",
            Status::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Status::Cancelled | Status::PaymentFailed | Status::Refunded
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asks for a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// The order's owner.
    Customer,
    Admin,
    /// shopstream itself: checkout, payment, the reservation sweeper.
    System,
}

/// What a transition does to stock and money, besides the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// The reserved units go back to `available`.
    ReleaseReservation,
    /// The reservation becomes a sale: on-hand and reserved go down.
    Sell,
    /// Sold units that never left go back on hand, and the charge is refunded.
    RestockAndRefund,
    /// The charge is refunded; the goods are gone (shipped).
    Refund,
}

/// Why a transition is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("an order cannot go from {from} to {to}")]
    Invalid { from: Status, to: Status },
    #[error("only an admin may set an order to {to}")]
    NotAllowed { to: Status },
}

/// The state machine: whether `by` may move an order from `from` to `to`,
/// and what that does.
pub fn transition(from: Status, to: Status, by: By) -> Result<Effect, TransitionError> {
    use Status::*;
    let invalid = Err(TransitionError::Invalid { from, to });
    let effect = match (from, to) {
        (PendingPayment, Paid) => Effect::Sell,
        (PendingPayment, PaymentFailed) => Effect::ReleaseReservation,
        (PendingPayment, Cancelled) => Effect::ReleaseReservation,
        (Paid, Packed) | (Packed, Shipped) | (Shipped, Delivered) => Effect::None,
        (Paid | Packed, Cancelled) => Effect::RestockAndRefund,
        (Paid | Packed, Refunded) => Effect::RestockAndRefund,
        (Shipped | Delivered, Refunded) => Effect::Refund,
        _ => return invalid,
    };
    let allowed = match (by, to) {
        (By::System, _) => true,
        (By::Admin, Paid | PaymentFailed) => false,
        (By::Admin, _) => true,
        (By::Customer, Cancelled) => true,
        (By::Customer, _) => false,
    };
    if !allowed {
        return Err(TransitionError::NotAllowed { to });
    }
    Ok(effect)
}

/// One line of an order, priced when the order was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: Price,
    #[schema(value_type = String, example = "39.98")]
    pub line_total: Price,
}

/// One step in an order's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusChange {
    pub status: Status,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// `user:{id}`, `admin:{id}` or `system`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the payment did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentInfo {
    pub provider: String,
    /// The last four digits of the card; the number itself is never stored.
    pub card_last4: String,
    /// `approved`, `declined`, `processor_error`, `timeout`, or `pending`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Carrier and tracking number of a shipped order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
}

/// An order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    #[schema(value_type = String, format = Uuid)]
    pub id: String,
    /// The customer's user id.
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub status: Status,
    pub lines: Vec<OrderLine>,
    #[schema(value_type = String, example = "39.98")]
    pub total: Price,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Until when the stock of a `pending_payment` order stays reserved.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub reserved_until: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    pub history: Vec<StatusChange>,
    /// The recommendation that led to this order, for attribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation_id: Option<String>,
    /// Grows by one with every change.
    pub version: u64,
}

impl Order {
    pub fn created_ms(&self) -> i64 {
        domain::clock::to_ms(self.created_at)
    }

    /// The sort key of the order's summaries: oldest first, unique.
    pub fn listing_sk(&self) -> String {
        format!("{:013}#{}", self.created_ms(), self.id)
    }

    pub fn summary(&self) -> OrderSummary {
        OrderSummary {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            status: self.status,
            total: self.total,
            currency: self.currency,
            items: self.lines.iter().map(|l| l.quantity).sum(),
            created_at: self.created_at,
        }
    }
}

/// An order in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderSummary {
    #[schema(value_type = String, format = Uuid)]
    pub id: String,
    pub user_id: String,
    pub status: Status,
    #[schema(value_type = String, example = "39.98")]
    pub total: Price,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Units over all lines.
    pub items: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn the_happy_path_is_allowed_step_by_step() {
        assert_eq!(
            transition(PendingPayment, Paid, By::System),
            Ok(Effect::Sell)
        );
        assert_eq!(transition(Paid, Packed, By::Admin), Ok(Effect::None));
        assert_eq!(transition(Packed, Shipped, By::Admin), Ok(Effect::None));
        assert_eq!(transition(Shipped, Delivered, By::Admin), Ok(Effect::None));
    }

    #[test]
    fn steps_cannot_be_skipped_or_undone() {
        for (from, to) in [
            (Paid, Shipped),
            (Paid, Delivered),
            (Packed, Delivered),
            (Shipped, Packed),
            (Delivered, Shipped),
            (Cancelled, Paid),
            (PaymentFailed, Paid),
            (Refunded, Paid),
            (Shipped, Cancelled),
            (Delivered, Cancelled),
            (PendingPayment, Refunded),
            (PendingPayment, Packed),
            (Paid, Paid),
        ] {
            assert_eq!(
                transition(from, to, By::Admin),
                Err(TransitionError::Invalid { from, to }),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn every_pair_is_either_valid_or_refused() {
        let mut valid = 0;
        for from in Status::ALL {
            for to in Status::ALL {
                if transition(from, to, By::System).is_ok() {
                    valid += 1;
                    assert!(!from.is_final(), "{from} is final but may go to {to}");
                }
            }
        }
        // pending→paid/failed/cancelled, paid→packed, packed→shipped,
        // shipped→delivered, paid|packed→cancelled, paid|packed|shipped|delivered→refunded
        assert_eq!(valid, 12);
    }

    #[test]
    fn customers_may_only_cancel_and_admins_never_fake_a_payment() {
        assert_eq!(
            transition(Paid, Cancelled, By::Customer),
            Ok(Effect::RestockAndRefund)
        );
        assert_eq!(
            transition(PendingPayment, Cancelled, By::Customer),
            Ok(Effect::ReleaseReservation)
        );
        assert_eq!(
            transition(Paid, Packed, By::Customer),
            Err(TransitionError::NotAllowed { to: Packed })
        );
        assert_eq!(
            transition(Delivered, Refunded, By::Customer),
            Err(TransitionError::NotAllowed { to: Refunded })
        );
        assert_eq!(
            transition(PendingPayment, Paid, By::Admin),
            Err(TransitionError::NotAllowed { to: Paid })
        );
    }

    #[test]
    fn refunds_restock_only_what_was_not_shipped() {
        assert_eq!(
            transition(Packed, Refunded, By::Admin),
            Ok(Effect::RestockAndRefund)
        );
        assert_eq!(transition(Shipped, Refunded, By::Admin), Ok(Effect::Refund));
        assert_eq!(
            transition(Delivered, Refunded, By::Admin),
            Ok(Effect::Refund)
        );
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Status::parse("lost"), None);
    }
}
