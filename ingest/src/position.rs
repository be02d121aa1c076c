//! Kinesis positions: sequence numbers (decimal strings of up to 128 bits,
//! beyond `u64` and compared as numbers), with a sub-sequence number for
//! records de-aggregated from a KPL record.
//!
//! A checkpoint is written `SEQ` once a whole Kinesis record is applied and
//! `SEQ:SUB` while only its user records up to `SUB` are; reading resumes
//! after `SEQ`, or at `SEQ` skipping what was applied.

use std::cmp::Ordering;

/// A position in a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The Kinesis sequence number, without leading zeros.
    pub sequence: String,
    /// The user record within an aggregated record; `None` for the whole
    /// record (which sorts after all its user records).
    pub sub: Option<u64>,
}

impl Position {
    pub fn whole(sequence: &str) -> Self {
        Self {
            sequence: normalise(sequence),
            sub: None,
        }
    }

    pub fn sub(sequence: &str, sub: u64) -> Self {
        Self {
            sequence: normalise(sequence),
            sub: Some(sub),
        }
    }

    /// Reads a checkpoint as [`Position::to_string`] writes it.
    pub fn parse(s: &str) -> Option<Self> {
        let (seq, sub) = match s.split_once(':') {
            Some((seq, sub)) => (seq, Some(sub.parse().ok()?)),
            None => (s, None),
        };
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            sequence: normalise(seq),
            sub,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.sub {
            Some(sub) => write!(f, "{}:{sub}", self.sequence),
            None => f.write_str(&self.sequence),
        }
    }
}

fn normalise(seq: &str) -> String {
    let t = seq.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// Compares two decimal sequence numbers as numbers.
pub fn cmp_sequence(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_sequence(&self.sequence, &other.sequence).then_with(|| match (self.sub, other.sub) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(&b),
        })
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers_beyond_u128() {
        let a = "49590338271490256608559692538361571095921575989136588898";
        let b = "49590338271490256608559692540925702759324208523137515618";
        assert_eq!(cmp_sequence(a, b), Ordering::Less);
        assert_eq!(cmp_sequence("9", "10"), Ordering::Less);
        assert_eq!(cmp_sequence("010", "10"), Ordering::Equal);
        assert_eq!(cmp_sequence(b, a), Ordering::Greater);
    }

    #[test]
    fn user_records_sort_before_their_whole_record() {
        let whole = Position::whole("100");
        assert!(Position::sub("100", 0) < Position::sub("100", 1));
        assert!(Position::sub("100", 7) < whole);
        assert!(whole < Position::sub("101", 0));
        assert!(Position::sub("99", 3) < Position::sub("100", 0));
    }

    #[test]
    fn checkpoints_round_trip() {
        for s in ["12345678901234567890123456789012345678901234567890", "7:3"] {
            assert_eq!(Position::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Position::parse("0007:2").unwrap().to_string(), "7:2");
        assert!(Position::parse("x").is_none());
        assert!(Position::parse("7:y").is_none());
        assert!(Position::parse("").is_none());
    }
}
