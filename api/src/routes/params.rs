//! Query-string parameters, read one by one so every bad one is named.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use domain::ValidationErrors;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;
/// The longest category or supplier id a query names.
pub const NAME_PARAM_LEN: usize = 64;
/// The longest cursor (the ones this API returns are far shorter).
pub const MAX_CURSOR_LEN: usize = 256;

#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
    pub errors: ValidationErrors,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::field("", format!("malformed query string: {e}")))?;
        Ok(Self {
            pairs,
            errors: ValidationErrors::default(),
        })
    }

    /// Removes and returns a parameter's value.
    pub fn take(&mut self, name: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == name)?;
        Some(self.pairs.remove(i).1)
    }

    pub fn limit(&mut self) -> usize {
        match self.take("limit").map(|v| v.parse::<usize>()) {
            None => DEFAULT_LIMIT,
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                self.errors.push(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                );
                DEFAULT_LIMIT
            }
        }
    }

    /// The trending `window`: `1h` (the default) or `24h`, with its name.
    pub fn window(&mut self) -> (time::Duration, &'static str) {
        match self.take("window").as_deref() {
            None | Some("1h") => (time::Duration::hours(1), "1h"),
            Some("24h") => (time::Duration::hours(24), "24h"),
            Some(_) => {
                self.errors.push("window", "must be 1h or 24h");
                (time::Duration::hours(1), "1h")
            }
        }
    }

    /// An opaque cursor this API returned earlier.
    pub fn cursor(&mut self) -> Option<String> {
        let raw = self.take("cursor")?;
        if !(1..=MAX_CURSOR_LEN).contains(&raw.len()) {
            self.errors
                .push("cursor", "is not a cursor this API returned");
            return None;
        }
        // Any well-formed cursor is a position to start after (a made-up one
        // only starts the page elsewhere).
        match URL_SAFE_NO_PAD
            .decode(&raw)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
        {
            Some(c) => Some(c),
            None => {
                self.errors
                    .push("cursor", "is not a cursor this API returned");
                None
            }
        }
    }

    /// A name such as a category or a supplier id: 1 to `max` characters
    /// (as the OpenAPI document's shared rule says).
    pub fn name(&mut self, name: &'static str, max: usize) -> Option<String> {
        let v = self.take(name)?;
        if (1..=max).contains(&v.chars().count()) {
            Some(v)
        } else {
            self.errors
                .push(name, format!("must be 1 to {max} characters"));
            None
        }
    }

    pub fn flag(&mut self, name: &'static str) -> bool {
        match self.take(name).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                self.errors.push(name, "must be true or false");
                false
            }
        }
    }

    /// Fails naming every unknown and every bad parameter.
    pub fn finish(mut self) -> Result<(), ApiError> {
        for (k, _) in std::mem::take(&mut self.pairs) {
            self.errors.push(k, "is not a known query parameter");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Makes a store cursor opaque for clients.
pub fn encode_cursor(c: Option<String>) -> Option<String> {
    c.map(|c| URL_SAFE_NO_PAD.encode(c))
}
