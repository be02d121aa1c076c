//! A batch committed in several transactions.
//!
//! A batch's fold writes each item it touches once, whatever the number of
//! events on it; that is what makes a batch of thousands of events cost
//! fewer writes than events. DynamoDB holds 100 items in a transaction, so
//! such a batch is committed in parts, and a crash (or a lost race) can
//! leave some parts committed and the others not. Three things make the
//! replay of such a batch apply every effect exactly once:
//!
//! - **The note.** The first part also writes, in the shard's lease item,
//!   where the batch ends, its clock, and which of its records were applied
//!   (the others were duplicates or dead letters). Until the last part moves
//!   the checkpoint and removes the note, every part is fenced on it. A
//!   worker that finds a note replays exactly those records, with those
//!   decisions and that clock, before anything else.
//! - **The marks.** Every item a part writes also gets the attribute of the
//!   shard ([`marker_attr`]) set to the batch's end. A replay reads the items
//!   it folds (stock, profiles, seen marks) and skips those marked already;
//!   the items it does not read (counters, training-log chunks, dead
//!   letters) are written on condition that they are not marked, and an
//!   operation refused for that alone is dropped: it is applied already.
//! - **Deterministic effects.** A replay's fold, given the note's decisions
//!   and clock, builds the same operation for every item not yet written,
//!   and the same keys for new items (dead letters are keyed by the note's
//!   clock).

use storage::{Cond, Item, Key, Table, TxOp, Update, Value};

/// The lease attributes of a batch being committed in parts.
pub const PENDING: &str = "pending";
const PENDING_AT: &str = "pending_at";
const PENDING_FIRSTS: &str = "pending_firsts";

/// What the attributes that mark an item as written by a shard's batch start
/// with (followed by a hash of the stream and shard).
pub const MARKER_PREFIX: &str = "bx_";

/// The attribute a shard's parted batches mark the items they write with.
pub fn marker_attr(stream: &str, shard: &str) -> String {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes().chain([0]).chain(shard.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{MARKER_PREFIX}{h:016x}")
}

/// Copies the marks of `from` onto `into`: for a put that replaces an item
/// outside the pipeline (merging profiles), so that a shard's replay still
/// finds its batch applied.
pub fn copy_markers(from: &Item, into: &mut Item) {
    for (k, v) in from {
        if k.starts_with(MARKER_PREFIX) {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// A batch committed in parts, as its lease item notes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The position of the batch's last record.
    pub end: String,
    /// The fold's clock, in milliseconds since the Unix epoch.
    pub at: i64,
    /// Per record of the batch: whether its event was applied.
    pub firsts: Vec<bool>,
}

impl Note {
    /// The note in a lease item, if it has one.
    pub fn of(lease: &Item) -> Option<Note> {
        let Some(Value::S(end)) = lease.get(PENDING) else {
            return None;
        };
        let at = match lease.get(PENDING_AT) {
            Some(Value::N(n)) => n.parse().ok()?,
            _ => return None,
        };
        let Some(Value::B(bits)) = lease.get(PENDING_FIRSTS) else {
            return None;
        };
        Some(Note {
            end: end.clone(),
            at,
            firsts: unpack(bits)?,
        })
    }

    /// The attributes that write the note.
    pub fn updates(&self) -> Vec<Update> {
        vec![
            Update::Set(PENDING.into(), Value::S(self.end.clone())),
            Update::Set(PENDING_AT.into(), Value::N(self.at.to_string())),
            Update::Set(PENDING_FIRSTS.into(), Value::B(pack(&self.firsts))),
        ]
    }

    /// The updates that remove the note.
    pub fn removals() -> Vec<Update> {
        [PENDING, PENDING_AT, PENDING_FIRSTS]
            .into_iter()
            .map(|a| Update::Remove(a.into()))
            .collect()
    }

    /// About how many bytes the note adds to the lease item.
    pub fn size(&self) -> usize {
        self.end.len() + self.firsts.len().div_ceil(8) + 64
    }
}

/// A bitmap: the count (4 bytes, big-endian), then the bits, first record
/// in the lowest bit of the first byte.
fn pack(bits: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + bits.len().div_ceil(8));
    out.extend_from_slice(&(bits.len() as u32).to_be_bytes());
    for chunk in bits.chunks(8) {
        let mut byte = 0u8;
        for (i, b) in chunk.iter().enumerate() {
            byte |= u8::from(*b) << i;
        }
        out.push(byte);
    }
    out
}

fn unpack(bytes: &[u8]) -> Option<Vec<bool>> {
    let n = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let body = &bytes[4..];
    if body.len() != n.div_ceil(8) {
        return None;
    }
    Some((0..n).map(|i| body[i / 8] & (1 << (i % 8)) != 0).collect())
}

/// Marks every operation with `attr = end`, and gives each one without a
/// condition (a blind add or put) the condition that the item is not marked
/// so already. Returns, per operation, whether it was blind: a blind
/// operation refused on condition is one the batch applied already.
pub fn mark(ops: &mut [TxOp], attr: &str, end: &str) -> Vec<bool> {
    let unmarked = || {
        Cond::Or(vec![
            Cond::HasNot(attr.to_owned()),
            Cond::Ne(attr.to_owned(), Value::S(end.to_owned())),
        ])
    };
    ops.iter_mut()
        .map(|op| match op {
            TxOp::Put { item, cond, .. } => {
                item.insert(attr.to_owned(), Value::S(end.to_owned()));
                let blind = cond.is_none();
                if blind {
                    *cond = Some(unmarked());
                }
                blind
            }
            TxOp::Update { updates, cond, .. } => {
                updates.push(Update::Set(attr.to_owned(), Value::S(end.to_owned())));
                let blind = cond.is_none();
                if blind {
                    *cond = Some(unmarked());
                }
                blind
            }
            TxOp::Delete { .. } | TxOp::Check { .. } => false,
        })
        .collect()
}

/// Whether `item`, as read, carries this batch's mark.
pub fn marked(item: &Item, attr: &str, end: &str) -> bool {
    matches!(item.get(attr), Some(Value::S(s)) if s == end)
}

/// One transaction's worth of a batch's operations, with their blind flags.
pub type Part = (Vec<TxOp>, Vec<bool>);

/// Splits operations into parts of at most `max_ops` operations and about
/// `max_bytes` bytes each, in order; never an empty list (a batch with no
/// effects is one empty part, for its fence).
pub fn split(ops: Vec<TxOp>, blind: Vec<bool>, max_ops: usize, max_bytes: usize) -> Vec<Part> {
    let mut parts: Vec<Part> = vec![(Vec::new(), Vec::new())];
    let mut bytes = 0;
    for (op, b) in ops.into_iter().zip(blind) {
        let size = storage::expr::transaction_size(std::slice::from_ref(&op));
        let last = parts.last_mut().expect("never empty");
        if !last.0.is_empty() && (last.0.len() >= max_ops || bytes + size > max_bytes) {
            parts.push((Vec::new(), Vec::new()));
            bytes = 0;
        }
        let last = parts.last_mut().expect("never empty");
        last.0.push(op);
        last.1.push(b);
        bytes += size;
    }
    parts
}

/// The table and key of an operation (`None` if the item has no key).
pub fn target(op: &TxOp) -> Option<(Table, Key)> {
    op.table_and_key().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_round_trips_through_a_lease_item() {
        let note = Note {
            end: "49590338271490256608559692538361571095921575989136588898:3".into(),
            at: 1_796_000_000_123,
            firsts: (0..21).map(|i| i % 3 != 0).collect(),
        };
        let mut item = Item::new();
        for u in note.updates() {
            if let Update::Set(a, v) = u {
                item.insert(a, v);
            }
        }
        assert_eq!(Note::of(&item), Some(note));
        item.remove(PENDING_AT);
        assert_eq!(Note::of(&item), None, "a note without its clock is no note");
    }

    #[test]
    fn a_bitmap_of_the_wrong_length_is_refused() {
        let mut b = pack(&[true, false, true]);
        b.push(0);
        assert_eq!(unpack(&b), None);
        assert_eq!(unpack(&pack(&[])), Some(vec![]));
    }

    #[test]
    fn marks_are_per_shard_and_stable() {
        let a = marker_attr("orders", "shardId-000000000001");
        assert_eq!(a, marker_attr("orders", "shardId-000000000001"));
        assert_ne!(a, marker_attr("orders", "shardId-000000000002"));
        assert_ne!(marker_attr("ab", "c"), marker_attr("a", "bc"));
        assert!(a.starts_with(MARKER_PREFIX) && a.len() == MARKER_PREFIX.len() + 16);
    }

    #[test]
    fn blind_operations_get_the_unmarked_condition_and_others_keep_theirs() {
        let key = Key::new("p", "s");
        let mut ops = vec![
            TxOp::Update {
                table: Table::Analytics,
                key: key.clone(),
                updates: vec![Update::add("views", 1)],
                cond: None,
            },
            TxOp::Update {
                table: Table::Inventory,
                key: key.clone(),
                updates: vec![Update::add("version", 1)],
                cond: Some(Cond::eq("version", 3u64)),
            },
        ];
        let blind = mark(&mut ops, "bx_1", "42");
        assert_eq!(blind, vec![true, false]);
        let TxOp::Update { updates, cond, .. } = &ops[0] else {
            unreachable!()
        };
        assert!(updates.contains(&Update::Set("bx_1".into(), Value::S("42".into()))));
        let mut marked_item = key.to_item();
        marked_item.insert("bx_1".into(), Value::S("42".into()));
        let c = cond.as_ref().unwrap();
        assert!(!storage::expr::holds(c, Some(&marked_item)));
        assert!(storage::expr::holds(c, Some(&key.to_item())));
        assert!(storage::expr::holds(c, None));
        marked_item.insert("bx_1".into(), Value::S("41".into()));
        assert!(storage::expr::holds(c, Some(&marked_item)));
        let TxOp::Update { cond, .. } = &ops[1] else {
            unreachable!()
        };
        assert_eq!(cond, &Some(Cond::eq("version", 3u64)));
    }

    #[test]
    fn parts_hold_at_most_the_limits_and_keep_the_order() {
        let ops: Vec<TxOp> = (0..250)
            .map(|i| TxOp::Update {
                table: Table::Analytics,
                key: Key::new("p", format!("{i:04}")),
                updates: vec![Update::add("n", 1)],
                cond: None,
            })
            .collect();
        let blind = vec![true; ops.len()];
        let parts = split(ops.clone(), blind, 99, usize::MAX);
        assert_eq!(
            parts.iter().map(|p| p.0.len()).collect::<Vec<_>>(),
            [99, 99, 52]
        );
        let flat: Vec<TxOp> = parts.into_iter().flat_map(|p| p.0).collect();
        assert_eq!(flat, ops);
        let one = storage::expr::transaction_size(&ops[..1]);
        let by_bytes = split(ops.clone(), vec![true; 250], 99, one * 10);
        assert!(by_bytes.iter().all(|p| p.0.len() <= 10));
        assert_eq!(split(Vec::new(), Vec::new(), 99, 1).len(), 1);
    }
}
