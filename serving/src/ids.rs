//! Recommendation ids the server issues and can verify, so that attribution
//! counts only clicks on what this service recommended to that subject.
//!
//! An item's id is `{version}~{issued}.{mac}~{source}`: the model version,
//! the issuing time (Unix seconds, hex), a truncated HMAC-SHA256 over the
//! version, the time, the subject it was shown to and the source, and the
//! source. It keeps the form [`processors::state::reco_ref`] reads. A
//! response's own id is the same without the source.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long an issued id is honoured (a click on a page left open
/// overnight still counts; an id kept for a week does not).
pub const MAX_AGE_SECS: i64 = 24 * 60 * 60;
/// Bytes of the MAC kept in an id (hex: twice as many characters).
const MAC_BYTES: usize = 12;
/// Who an id is bound to when the answer was for nobody in particular (no
/// user, no session): such an id verifies for any subject.
const ANYONE: &str = "*";

/// Issues and verifies recommendation ids with a key of the service's.
#[derive(Clone)]
pub struct RecoIds {
    key: Vec<u8>,
}

impl std::fmt::Debug for RecoIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoIds { key: [redacted] }")
    }
}

impl RecoIds {
    /// Keys derived from the service's secret (its JWT secret), for this use
    /// only.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: mac(secret, &[b"shopstream recommendation ids"]),
        }
    }

    fn tag(&self, version: &str, issued: &str, subject: &str, source: &str) -> String {
        let m = mac(
            &self.key,
            &[
                version.as_bytes(),
                issued.as_bytes(),
                subject.as_bytes(),
                source.as_bytes(),
            ],
        );
        hex::encode(&m[..MAC_BYTES])
    }

    /// An id for an answer of model `version` shown to `subject` (its store
    /// key, `user:…` or `session:…`), at `now` (Unix seconds), for an item
    /// from `source` (`None`: the response's own id).
    pub fn issue(
        &self,
        version: &str,
        subject: Option<&str>,
        source: Option<&str>,
        now: i64,
    ) -> String {
        let issued = format!("{:x}", now.max(0));
        let subject = subject.unwrap_or(ANYONE);
        let tag = self.tag(version, &issued, subject, source.unwrap_or(""));
        match source {
            Some(s) => format!("{version}~{issued}.{tag}~{s}"),
            None => format!("{version}~{issued}.{tag}"),
        }
    }

    /// Whether `id` was issued by this service, to `subject` (or to anyone),
    /// no longer than [`MAX_AGE_SECS`] before `now`.
    pub fn verify(&self, id: &str, subject: Option<&str>, now: i64) -> bool {
        let mut parts = id.split('~');
        let (Some(version), Some(token)) = (parts.next(), parts.next()) else {
            return false;
        };
        let source = parts.next();
        if parts.next().is_some() {
            return false;
        }
        let Some((issued, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(at) = i64::from_str_radix(issued, 16) else {
            return false;
        };
        if at > now + 60 || now - at > MAX_AGE_SECS {
            return false;
        }
        let source = source.unwrap_or("");
        let matches = |who: &str| {
            let want = self.tag(version, issued, who, source);
            // Constant time over the tag's bytes.
            want.len() == tag.len()
                && want
                    .bytes()
                    .zip(tag.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        };
        subject.is_some_and(&matches) || matches(ANYONE)
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000;

    #[test]
    fn an_issued_id_verifies_for_its_subject_only_and_only_while_fresh() {
        let ids = RecoIds::new(b"secret");
        let id = ids.issue("v7", Some("session:s1"), Some("sequence"), NOW);
        assert!(id.starts_with("v7~") && id.ends_with("~sequence"), "{id}");
        let r = processors::state::reco_ref(&id).expect("attribution reads it");
        assert_eq!((r.version, r.source), ("v7", Some("sequence")));
        assert!(ids.verify(&id, Some("session:s1"), NOW + 10));
        assert!(!ids.verify(&id, Some("session:s2"), NOW), "another subject");
        assert!(!ids.verify(&id, None, NOW), "no subject");
        assert!(
            !ids.verify(&id, Some("session:s1"), NOW + MAX_AGE_SECS + 1),
            "stale"
        );
        assert!(
            !RecoIds::new(b"other").verify(&id, Some("session:s1"), NOW),
            "another key"
        );
        // Changing any part breaks it.
        let forged_source = id.replace("~sequence", "~embedding");
        assert!(!ids.verify(&forged_source, Some("session:s1"), NOW));
        let forged_version = id.replacen("v7", "v8", 1);
        assert!(!ids.verify(&forged_version, Some("session:s1"), NOW));
        for bad in ["", "vFAKE-1~1~x", "v7~zz.00~x", "v7~1.2.3", "v7~a.b~c~d"] {
            assert!(!ids.verify(bad, Some("session:s1"), NOW), "{bad}");
        }
    }

    #[test]
    fn an_answer_for_nobody_verifies_for_anyone() {
        let ids = RecoIds::new(b"secret");
        let id = ids.issue("popularity", None, None, NOW);
        assert!(ids.verify(&id, Some("user:u1"), NOW));
        assert!(ids.verify(&id, None, NOW));
        assert!(format!("{ids:?}").contains("redacted"));
    }
}
