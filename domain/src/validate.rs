//! Reading a JSON object field by field, collecting every error instead of
//! stopping at the first, so a client learns all it has to fix at once.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

/// One field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's JSON name (`attributes.colour` for a nested one).
    pub field: String,
    pub message: String,
}

/// Every field at fault in one input.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` if no error was collected.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.field.as_str())
    }
}

/// Reads the fields of one JSON object, recording what is wrong with each.
#[derive(Debug)]
pub struct FieldReader<'a> {
    object: &'a Map<String, Value>,
    seen: BTreeSet<&'static str>,
    pub errors: ValidationErrors,
}

/// The characters a field may have around it that are trimmed off: the
/// Unicode white space that is not a control character (a regex class body,
/// ECMA-262 and Rust's `regex` alike).
pub const TRIMMED: &str = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// The control characters (`char::is_control`), which no text field takes.
pub const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// A free-text field that must not be empty, as the OpenAPI document states
/// it: no control character, and something besides white space.
pub fn text_pattern() -> String {
    format!("^[^{CONTROL}]*[^{CONTROL}{TRIMMED}][^{CONTROL}]*$")
}

/// A free-text field that may be empty: no control character.
pub fn text_or_empty_pattern() -> String {
    format!("^[^{CONTROL}]*$")
}

/// A string's length limits, in characters.
#[derive(Clone, Copy, Debug)]
pub struct Len {
    pub min: usize,
    pub max: usize,
}

impl<'a> FieldReader<'a> {
    /// Fails with one error on the whole body if it is not an object.
    pub fn new(value: &'a Value) -> Result<Self, ValidationErrors> {
        match value {
            Value::Object(object) => Ok(Self {
                object,
                seen: BTreeSet::new(),
                errors: ValidationErrors::default(),
            }),
            _ => Err(ValidationErrors::single(
                "",
                "the body must be a JSON object",
            )),
        }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.seen.insert(name);
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// Whether the field is present (even as `null`), without reading it.
    pub fn has(&self, name: &str) -> bool {
        self.object.contains_key(name)
    }

    /// Whether the field is present and explicitly `null`.
    pub fn is_null(&self, name: &str) -> bool {
        matches!(self.object.get(name), Some(Value::Null))
    }

    fn missing(&mut self, name: &str) {
        self.errors.push(name, "is required");
    }

    pub fn string(&mut self, name: &'static str, required: bool, len: Len) -> Option<String> {
        match self.get(name) {
            None => {
                if required {
                    self.missing(name);
                }
                None
            }
            Some(Value::String(s)) => {
                // Limits as the OpenAPI document states them (`TEXT_PATTERN`,
                // maxLength): the whole string is at most `max` characters
                // and free of control characters; it is stored trimmed, and
                // must not be empty once trimmed.
                let trimmed = s.trim();
                if trimmed.chars().count() < len.min {
                    if len.min == 1 {
                        self.errors.push(name, "must not be empty");
                    } else {
                        self.errors
                            .push(name, format!("must be at least {} characters", len.min));
                    }
                    None
                } else if s.chars().count() > len.max {
                    self.errors
                        .push(name, format!("must be at most {} characters", len.max));
                    None
                } else if s.chars().any(char::is_control) {
                    self.errors
                        .push(name, "must not contain control characters");
                    None
                } else {
                    Some(trimmed.to_owned())
                }
            }
            Some(other) => {
                self.errors
                    .push(name, format!("must be a string, not {}", kind(other)));
                None
            }
        }
    }

    pub fn integer(
        &mut self,
        name: &'static str,
        required: bool,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        match self.get(name) {
            None => {
                if required {
                    self.missing(name);
                }
                None
            }
            // JSON Schema's integers include `2.0`; any other fraction is not one.
            Some(Value::Number(n)) => match n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }) {
                Some(i) if (min..=max).contains(&i) => Some(i),
                _ => {
                    self.errors
                        .push(name, format!("must be a whole number from {min} to {max}"));
                    None
                }
            },
            Some(other) => {
                self.errors
                    .push(name, format!("must be a whole number, not {}", kind(other)));
                None
            }
        }
    }

    /// A map of strings to strings, with limits on its size and its keys' and
    /// values' lengths.
    pub fn string_map(
        &mut self,
        name: &'static str,
        max_entries: usize,
        key_len: Len,
        value_len: Len,
    ) -> Option<BTreeMap<String, String>> {
        let value = self.get(name)?;
        let Value::Object(map) = value else {
            self.errors.push(
                name,
                format!("must be an object of strings, not {}", kind(value)),
            );
            return None;
        };
        if map.len() > max_entries {
            self.errors
                .push(name, format!("must have at most {max_entries} entries"));
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in map {
            let field = format!("{name}.{k}");
            let key_chars = k.chars().count();
            if k.chars().any(char::is_control)
                || v.as_str().is_some_and(|v| v.chars().any(char::is_control))
            {
                self.errors
                    .push(field.clone(), "must not contain control characters");
                ok = false;
                continue;
            }
            if key_chars < key_len.min || key_chars > key_len.max {
                self.errors.push(
                    field.clone(),
                    format!("keys must be {} to {} characters", key_len.min, key_len.max),
                );
                ok = false;
            }
            match v {
                Value::String(s) if s.chars().count() <= value_len.max => {
                    out.insert(k.clone(), s.clone());
                }
                Value::String(_) => {
                    self.errors.push(
                        field,
                        format!("must be at most {} characters", value_len.max),
                    );
                    ok = false;
                }
                other => {
                    self.errors
                        .push(field, format!("must be a string, not {}", kind(other)));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A required string taken as sent: not trimmed, not checked (a
    /// password, which the caller checks itself).
    pub fn untrimmed(&mut self, name: &'static str) -> Option<&'a str> {
        match self.get(name) {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.errors.push(name, "must be a string");
                None
            }
            None => {
                self.missing(name);
                None
            }
        }
    }

    /// The raw value of a field whose type the caller checks itself.
    pub fn raw(&mut self, name: &'static str) -> Option<&'a Value> {
        self.get(name)
    }

    /// Records an error for every field of the object that no read asked for.
    pub fn deny_unknown(&mut self) {
        let unknown: Vec<String> = self
            .object
            .keys()
            .filter(|k| !self.seen.contains(k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            self.errors.push(k, "is not a known field");
        }
    }

    /// Records an error for each of these fields that is present: fields the
    /// server sets, which a client may not.
    pub fn deny_read_only(&mut self, names: &[&'static str]) {
        for &name in names {
            self.seen.insert(name);
            if self.object.contains_key(name) {
                self.errors
                    .push(name, "is set by the server and cannot be written");
            }
        }
    }
}

/// A JSON value's kind, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
