//! Exact prices. Amounts are decimals (never floats) and travel in JSON as
//! strings such as `"19.99"`, so no client or store rounds them.

use std::{fmt, str::FromStr};

use crate::Invalid;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The largest price the catalogue accepts: anything above is a typo.
pub const MAX_PRICE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// At most this many digits after the decimal point (enough for every ISO 4217
/// currency's minor unit).
pub const MAX_SCALE: u32 = 3;

/// A price in a currency's major unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Price(Decimal);

impl Price {
    /// Parses a decimal string: non-negative, at most [`MAX_SCALE`] decimals,
    /// at most [`MAX_PRICE`].
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err("must be a decimal number such as \"19.99\"".into());
        }
        let d = Decimal::from_str(s)
            .map_err(|_| Invalid::new("must be a decimal number such as \"19.99\""))?;
        Self::from_decimal(d)
    }

    /// A price from integer minor units (cents): `1999` with scale 2 is 19.99.
    pub fn from_minor_units(units: i64, scale: u32) -> Result<Self, Invalid> {
        Self::from_decimal(Decimal::new(units, scale))
    }

    pub fn from_decimal(d: Decimal) -> Result<Self, Invalid> {
        if d.is_sign_negative() && !d.is_zero() {
            return Err("must not be negative".into());
        }
        if d > MAX_PRICE {
            return Err(Invalid::new(format!("must be at most {MAX_PRICE}")));
        }
        let normalized = d.normalize();
        if normalized.scale() > MAX_SCALE {
            return Err(Invalid::new(format!(
                "must have at most {MAX_SCALE} decimal places"
            )));
        }
        Ok(Self(d.abs()))
    }

    pub fn amount(&self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for Price {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl From<Price> for String {
    fn from(p: Price) -> String {
        p.0.to_string()
    }
}

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([b[0], b[1], b[2]]))
        } else {
            Err("must be an ISO 4217 code of three upper-case letters, such as \"EUR\"".into())
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Currency {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_and_bounded() {
        assert_eq!(Price::parse("19.99").unwrap().to_string(), "19.99");
        assert_eq!(Price::parse("0").unwrap().to_string(), "0");
        assert_eq!(
            Price::from_minor_units(1999, 2).unwrap(),
            Price::parse("19.99").unwrap()
        );
        assert!(Price::parse("-1").is_err());
        assert!(Price::parse("NaN").is_err());
        assert!(Price::parse("1e3").is_err());
        assert!(Price::parse("1000000000.01").is_err());
        assert!(Price::parse("1.0001").is_err());
        assert!(Price::parse("").is_err());
        // 0.1 + 0.2 is exactly 0.3 here, unlike in floats.
        let sum = Price::parse("0.1").unwrap().amount() + Price::parse("0.2").unwrap().amount();
        assert_eq!(sum, Price::parse("0.3").unwrap().amount());
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
    }
}
