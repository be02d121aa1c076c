//! The embedded store's on-disk encoding of an item: compact binary, a
//! tag byte per value and varint lengths, instead of DynamoDB-JSON text.
//!
//! Every stored value starts with [`FORMAT`]; a value that starts with `{`
//! is an item written as JSON by an earlier version and is still read, so
//! an existing data directory needs no migration (items are rewritten in
//! the new encoding as they change).

use std::collections::HashMap;

use crate::{StoreError, StoreResult, port::Item, port::Value};

/// The first byte of an item in this encoding.
const FORMAT: u8 = 1;
/// Deeper nesting than DynamoDB allows (32 levels) is corrupt.
const MAX_DEPTH: usize = 32;

const N: u8 = 0;
const S: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BOOL_TRUE: u8 = 3;
const B: u8 = 4;
const NULL: u8 = 5;
const M: u8 = 6;
const L: u8 = 7;
const SS: u8 = 8;
const NS: u8 = 9;
const BS: u8 = 10;

/// Encodes an item.
#[cfg(test)]
pub fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(&mut out, item);
    out
}

/// Encodes an item at the end of `out`.
pub fn encode_into(out: &mut Vec<u8>, item: &Item) {
    out.push(FORMAT);
    map(out, item);
}

/// Decodes only the attributes of an item named in `names` (an item with
/// none of them decodes to an empty item): what a condition needs, without
/// the cost of the rest.
pub fn decode_only(bytes: &[u8], names: &[&str]) -> StoreResult<Item> {
    match bytes.first() {
        Some(&FORMAT) => {
            let mut r = Reader { bytes, at: 1 };
            let n = r.len()?;
            let mut m = HashMap::with_capacity(names.len());
            for _ in 0..n {
                let k = r.raw()?;
                if names.iter().any(|name| name.as_bytes() == k) {
                    let k = std::str::from_utf8(k)
                        .map_err(|_| corrupt("a string that is not UTF-8"))?;
                    let v = r.value(1)?;
                    m.insert(k.to_owned(), v);
                } else {
                    r.skip(1)?;
                }
            }
            if r.at != bytes.len() {
                return Err(corrupt("trailing bytes after the item"));
            }
            Ok(m)
        }
        _ => {
            let mut item = decode(bytes)?;
            item.retain(|k, _| names.contains(&k.as_str()));
            Ok(item)
        }
    }
}

/// Decodes an item written by [`encode`] (or as JSON, by earlier versions).
pub fn decode(bytes: &[u8]) -> StoreResult<Item> {
    match bytes.first() {
        Some(&FORMAT) => {
            let mut r = Reader { bytes, at: 1 };
            let item = r.map(0)?;
            if r.at != bytes.len() {
                return Err(corrupt("trailing bytes after the item"));
            }
            Ok(item)
        }
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string())),
        _ => Err(corrupt("unknown item encoding")),
    }
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("stored item: {why}"))
}

fn varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len());
    out.extend_from_slice(b);
}

fn map(out: &mut Vec<u8>, m: &HashMap<String, Value>) {
    varint(out, m.len());
    for (k, v) in m {
        bytes(out, k.as_bytes());
        value(out, v);
    }
}

fn strings(out: &mut Vec<u8>, tag: u8, list: &[String]) {
    out.push(tag);
    varint(out, list.len());
    for s in list {
        bytes(out, s.as_bytes());
    }
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::N(n) => {
            out.push(N);
            bytes(out, n.as_bytes());
        }
        Value::S(s) => {
            out.push(S);
            bytes(out, s.as_bytes());
        }
        Value::Bool(b) => out.push(if *b { BOOL_TRUE } else { BOOL_FALSE }),
        Value::B(b) => {
            out.push(B);
            bytes(out, b);
        }
        Value::Null(_) => out.push(NULL),
        Value::M(m) => {
            out.push(M);
            map(out, m);
        }
        Value::L(l) => {
            out.push(L);
            varint(out, l.len());
            for v in l {
                value(out, v);
            }
        }
        Value::Ss(l) => strings(out, SS, l),
        Value::Ns(l) => strings(out, NS, l),
        Value::Bs(l) => {
            out.push(BS);
            varint(out, l.len());
            for b in l {
                bytes(out, b);
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> StoreResult<u8> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| corrupt("cut short"))?;
        self.at += 1;
        Ok(b)
    }

    fn len(&mut self) -> StoreResult<usize> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // A length can never exceed what is left to read.
                return if n <= self.bytes.len() - self.at {
                    Ok(n)
                } else {
                    Err(corrupt("a length past the end"))
                };
            }
        }
        Err(corrupt("a length too long"))
    }

    fn raw(&mut self) -> StoreResult<&'a [u8]> {
        let n = self.len()?;
        let b = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(b)
    }

    fn string(&mut self) -> StoreResult<String> {
        String::from_utf8(self.raw()?.to_vec()).map_err(|_| corrupt("a string that is not UTF-8"))
    }

    fn map(&mut self, depth: usize) -> StoreResult<HashMap<String, Value>> {
        let n = self.len()?;
        let mut m = HashMap::with_capacity(n);
        for _ in 0..n {
            let k = self.string()?;
            let v = self.value(depth + 1)?;
            m.insert(k, v);
        }
        Ok(m)
    }

    fn list<T>(&mut self, mut one: impl FnMut(&mut Self) -> StoreResult<T>) -> StoreResult<Vec<T>> {
        let n = self.len()?;
        let mut l = Vec::with_capacity(n);
        for _ in 0..n {
            l.push(one(self)?);
        }
        Ok(l)
    }

    /// Passes over one value, checking its framing but building nothing.
    fn skip(&mut self, depth: usize) -> StoreResult<()> {
        if depth > MAX_DEPTH {
            return Err(corrupt("nested too deep"));
        }
        match self.byte()? {
            N | S | B => drop(self.raw()?),
            BOOL_FALSE | BOOL_TRUE | NULL => {}
            M => {
                for _ in 0..self.len()? {
                    self.raw()?;
                    self.skip(depth + 1)?;
                }
            }
            L => {
                for _ in 0..self.len()? {
                    self.skip(depth + 1)?;
                }
            }
            SS | NS | BS => {
                for _ in 0..self.len()? {
                    self.raw()?;
                }
            }
            _ => return Err(corrupt("an unknown value tag")),
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> StoreResult<Value> {
        if depth > MAX_DEPTH {
            return Err(corrupt("nested too deep"));
        }
        Ok(match self.byte()? {
            N => Value::N(self.string()?),
            S => Value::S(self.string()?),
            BOOL_FALSE => Value::Bool(false),
            BOOL_TRUE => Value::Bool(true),
            B => Value::B(self.raw()?.to_vec()),
            NULL => Value::Null(true),
            M => Value::M(self.map(depth)?),
            L => Value::L(self.list(|r| r.value(depth + 1))?),
            SS => Value::Ss(self.list(Self::string)?),
            NS => Value::Ns(self.list(Self::string)?),
            BS => Value::Bs(self.list(|r| Ok(r.raw()?.to_vec()))?),
            _ => return Err(corrupt("an unknown value tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "[0-9.-]{0,12}".prop_map(Value::N),
            ".{0,20}".prop_map(Value::S),
            any::<bool>().prop_map(Value::Bool),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::B),
            Just(Value::Null(true)),
            proptest::collection::vec(".{0,8}", 1..4).prop_map(Value::Ss),
            proptest::collection::vec("[0-9]{1,5}", 1..4).prop_map(Value::Ns),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 1..3)
                .prop_map(Value::Bs),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::L),
                proptest::collection::hash_map(".{0,6}", inner, 0..6).prop_map(Value::M),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_item_comes_back_as_it_was(item in proptest::collection::hash_map(".{0,10}", values(), 0..8)) {
            let bytes = encode(&item);
            prop_assert_eq!(decode(&bytes).unwrap(), item);
        }

        #[test]
        fn decoding_some_attributes_gives_those_of_the_whole(
            item in proptest::collection::hash_map(".{0,10}", values(), 0..8),
            wanted in proptest::collection::vec(".{0,10}", 0..4),
        ) {
            // Half the time, ask for attributes the item has.
            let mut names: Vec<&str> = wanted.iter().map(String::as_str).collect();
            names.extend(item.keys().step_by(2).map(String::as_str));
            let mut whole = item.clone();
            whole.retain(|k, _| names.contains(&k.as_str()));
            prop_assert_eq!(decode_only(&encode(&item), &names).unwrap(), whole.clone());
            let json = serde_json::to_vec(&item).unwrap();
            prop_assert_eq!(decode_only(&json, &names).unwrap(), whole);
        }

        #[test]
        fn any_bytes_decode_or_are_corrupt_and_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(b) = bytes.first_mut() { *b = FORMAT; }
            let _ = decode(&bytes);
            let _ = decode_only(&bytes, &["a", "version"]);
        }
    }

    #[test]
    fn items_written_as_json_are_still_read() {
        let item = Item::from([
            ("pk".to_owned(), Value::S("p".into())),
            ("n".to_owned(), Value::N("12".into())),
        ]);
        let json = serde_json::to_vec(&item).unwrap();
        assert_eq!(decode(&json).unwrap(), item);
        assert!(encode(&item).len() < json.len());
        assert!(matches!(decode(b"\x07junk"), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            decode(&[FORMAT, 1, 1, b'a', S, 200]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
