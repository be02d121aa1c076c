//! Users, their roles, and the rules for e-mail addresses and passwords.

use std::{collections::BTreeMap, fmt, str::FromStr};

use crate::Invalid;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::UserId;

/// Shortest password accepted (OWASP ASVS 2.1.1).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted: a bound on hashing work per request.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Shops: basket, checkout, own orders and profile.
    Customer,
    /// Runs the shop: product CRUD, stock, every order.
    Admin,
    /// Supplies products: sees its own products' stock and alerts.
    Supplier,
    /// A machine client that publishes stock and product events.
    Service,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
            Role::Supplier => "supplier",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "customer" => Ok(Role::Customer),
            "admin" => Ok(Role::Admin),
            "supplier" => Ok(Role::Supplier),
            "service" => Ok(Role::Service),
            other => Err(Invalid::new(format!(
                "unknown role {other:?}: expected customer, admin, supplier or service"
            ))),
        }
    }
}

/// A syntactically plausible e-mail address, lower-cased so that it is unique
/// whatever case it was typed in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        if s.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, host)) = s.rsplit_once('@') else {
            return Err("must be an e-mail address such as ada@example.com".into());
        };
        let valid_host = host.contains('.')
            && !host.starts_with('.')
            && !host.ends_with('.')
            && host
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local.is_empty()
            || local.len() > 64
            || local
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '@')
            || !valid_host
        {
            return Err("must be an e-mail address such as ada@example.com".into());
        }
        Ok(Self(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// Checks a new password against the policy.
pub fn check_password(password: &str) -> Result<(), Invalid> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        Err(Invalid::new(format!(
            "must be at least {MIN_PASSWORD_CHARS} characters"
        )))
    } else if chars > MAX_PASSWORD_CHARS {
        Err(Invalid::new(format!(
            "must be at most {MAX_PASSWORD_CHARS} characters"
        )))
    } else if password.chars().any(char::is_control) {
        Err(Invalid::new("must not contain control characters"))
    } else {
        Ok(())
    }
}

/// A postal address for shipping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

/// A registered user. The password hash never leaves the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: String,
    pub role: Role,
    /// Set for suppliers: which supplier's products they see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_id: Option<String>,
    /// PHC string of the argon2id hash; empty for an account that signs in
    /// only through the external issuer (no password matches it).
    pub password_hash: String,
    /// The external identity (`issuer` and `sub`, joined by `#`) that signs
    /// in as this user through OpenID Connect, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
    #[serde(default)]
    pub preferences: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada@exa mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn password_policy() {
        assert!(check_password("short").is_err());
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password(&"x".repeat(257)).is_err());
    }

    #[test]
    fn roles_parse() {
        assert_eq!("supplier".parse::<Role>().unwrap(), Role::Supplier);
        assert!("root".parse::<Role>().is_err());
    }
}
