//! Typed identifiers. Ids are UUIDv7: made by the server, sortable by creation
//! time and never reused. A product can also come with the shop's own id or
//! SKU (an *external id*, from a catalogue import): its id is then derived
//! from that, the same on every machine and in every import
//! ([`ProductId::external`]).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id, ordered after every id made before it.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies a product.
    ProductId
);
id_type!(
    /// Identifies a user.
    UserId
);

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Uuid::deserialize(d).map(Self)
    }
}

/// The longest external product id, in bytes.
pub const MAX_EXTERNAL_ID_BYTES: usize = 128;

impl ProductId {
    /// The product id of an external id (a shop's own product id or SKU):
    /// `00000000-0000-8xxx-yxxx-xxxxxxxxxxxx`, a UUIDv8 whose 74 free bits
    /// are the first bits of the SHA-256 of `external_id`. The zero prefix
    /// sorts imported products before every server-made (time-ordered) id,
    /// as if made at the epoch. The caller checks the id is valid
    /// ([`ProductId::parse_or_external`]).
    pub fn external(external_id: &str) -> Self {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(external_id.as_bytes());
        let mut b = [0u8; 16];
        b[6..].copy_from_slice(&hash[..10]);
        b[6] = 0x80 | (b[6] & 0x0f);
        b[8] = 0x80 | (b[8] & 0x3f);
        Self(Uuid::from_bytes(b))
    }

    /// A UUID as it is, else a valid external id (1 to
    /// [`MAX_EXTERNAL_ID_BYTES`] bytes, no control characters, no space at
    /// either end) as its [`ProductId::external`] id.
    pub fn parse_or_external(s: &str) -> Result<Self, crate::Invalid> {
        if let Ok(u) = Uuid::parse_str(s) {
            return Ok(Self(u));
        }
        check_external(s)?;
        Ok(Self::external(s))
    }
}

/// Checks an external product id (see [`ProductId::parse_or_external`]).
pub fn check_external(s: &str) -> Result<(), crate::Invalid> {
    if s.is_empty() || s.len() > MAX_EXTERNAL_ID_BYTES {
        return Err(crate::Invalid::new(format!(
            "a product id is a UUID or an external id of 1 to {MAX_EXTERNAL_ID_BYTES} bytes"
        )));
    }
    if s.chars().any(char::is_control) || s.trim() != s {
        return Err(crate::Invalid::new(
            "an external product id has no control characters and no space at either end",
        ));
    }
    Ok(())
}

/// Events and request bodies may name a product by its external id.
impl<'de> Deserialize<'de> for ProductId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ProductId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a product id (a UUID) or an external product id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ProductId, E> {
                ProductId::parse_or_external(s).map_err(|e| E::custom(e.to_string()))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ordered_by_creation_and_round_trip() {
        let a = ProductId::new();
        let b = ProductId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<ProductId>().unwrap(), a);
        assert!("not-a-uuid".parse::<ProductId>().is_err());
    }

    #[test]
    fn an_external_id_maps_to_one_product_id_before_every_made_one() {
        let a = ProductId::external("SKU-1");
        assert_eq!(a, ProductId::external("SKU-1"));
        assert_ne!(a, ProductId::external("SKU-2"));
        assert!(a < ProductId::new());
        assert!(a.to_string().starts_with("00000000-0000-8"));
        assert_eq!(a.as_uuid().get_version_num(), 8);
        assert_eq!(ProductId::parse_or_external("SKU-1").unwrap(), a);
        let made = ProductId::new();
        assert_eq!(
            ProductId::parse_or_external(&made.to_string()).unwrap(),
            made
        );
        let decoded: ProductId = serde_json::from_str("\"SKU-1\"").unwrap();
        assert_eq!(decoded, a);
        for bad in ["", " SKU", "SKU\n1", &"x".repeat(MAX_EXTERNAL_ID_BYTES + 1)] {
            assert!(ProductId::parse_or_external(bad).is_err(), "{bad:?}");
            assert!(serde_json::from_value::<ProductId>(serde_json::json!(bad)).is_err());
        }
        assert!(serde_json::from_str::<UserId>("\"SKU-1\"").is_err());
    }
}
