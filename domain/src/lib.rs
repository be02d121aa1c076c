//! shopstream's domain: the entities, the event schema and the rules that make
//! a value valid. Nothing here does I/O.
//!
//! # Layout
//! - [`ids`]: typed identifiers.
//! - [`money`]: exact decimal prices with a currency.
//! - [`user`]: users, roles, e-mail addresses and the password policy.
//! - [`product`]: the catalogue entity and the parsers of its create, replace and
//!   patch bodies, which report every field at fault at once.
//! - [`event`]: the versioned event envelope the stream carries.
//! - [`validate`]: field-by-field JSON reading that collects every error.

pub mod clock;
pub mod event;
pub mod ids;
mod invalid;
pub mod money;
pub mod product;
pub mod user;
pub mod validate;

pub use event::{Actor, DeadLetterReason, Event, EventPayload, Rejection, Subject};
pub use ids::{ProductId, UserId};
pub use invalid::Invalid;
pub use money::{Currency, Price};
pub use product::{Product, ProductDraft, ProductPatch};
pub use user::{Email, Role, User};
pub use validate::{FieldError, ValidationErrors};

/// The current time, truncated to milliseconds so that it survives every store
/// and JSON round trip unchanged.
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now)
}
