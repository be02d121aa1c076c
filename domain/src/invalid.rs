//! Why a value was refused.

use std::borrow::Cow;

/// Why a value was refused, worded for the person who typed it (it is
/// shown next to the field at fault: "must be at most 254 characters").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(Cow<'static, str>);

impl Invalid {
    pub fn new(why: impl Into<Cow<'static, str>>) -> Self {
        Self(why.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0.into_owned()
    }
}

impl From<&'static str> for Invalid {
    fn from(why: &'static str) -> Self {
        Self::new(why)
    }
}
