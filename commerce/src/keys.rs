//! The orders table's keys, and the clock in the form the items keep it.

use domain::Price;
use rust_decimal::Decimal;
use storage::Key;
use time::OffsetDateTime;

use crate::order::Status;

pub(crate) use domain::clock::{from_ms as ms_to_time, now_ms};

pub(crate) fn line_total(unit: Price, q: i64) -> Price {
    Price::from_decimal(unit.amount() * Decimal::from(q)).unwrap_or(unit)
}

pub(crate) fn order_key(id: &str) -> Key {
    Key::new(format!("order#{id}"), "order")
}
pub(crate) fn owner_key(user_id: &str, sk: &str) -> Key {
    Key::new(format!("owner#{user_id}"), sk)
}
pub(crate) fn status_key(status: Status, sk: &str) -> Key {
    Key::new(format!("status#{status}"), sk)
}
pub(crate) fn all_key(sk: &str) -> Key {
    Key::new("all", sk)
}
pub(crate) fn idem_key(user_id: &str, key: &str) -> Key {
    Key::new(format!("idem#{user_id}#{key}"), "idem")
}
pub(crate) fn reservation_key(until: OffsetDateTime, order_id: &str) -> Key {
    let ms = domain::clock::to_ms(until);
    Key::new("reservation", format!("{ms:013}#{order_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_totals_are_exact_decimals() {
        let unit = Price::parse("0.10").unwrap();
        assert_eq!(line_total(unit, 3).to_string(), "0.30");
        assert_eq!(
            line_total(Price::parse("19.99").unwrap(), 99).to_string(),
            "1979.01"
        );
    }

    #[test]
    fn reservation_keys_sort_by_expiry_then_order() {
        let early = ms_to_time(999);
        let late = ms_to_time(1_700_000_000_000);
        let a = reservation_key(early, "b");
        let b = reservation_key(late, "a");
        assert_eq!(a.pk, "reservation");
        assert_eq!(
            a.sk, "0000000000999#b",
            "zero-padded so text order is time order"
        );
        assert!(a.sk < b.sk);
        assert_eq!(
            ms_to_time(1_700_000_000_000).unix_timestamp(),
            1_700_000_000
        );
    }

    #[test]
    fn each_index_has_its_own_partition() {
        let sk = "0000000000001#o1";
        let keys = [
            order_key("o1"),
            owner_key("u1", sk),
            status_key(Status::Paid, sk),
            all_key(sk),
            idem_key("u1", "k1"),
        ];
        let pks: Vec<&str> = keys.iter().map(|k| k.pk.as_str()).collect();
        assert_eq!(
            pks,
            ["order#o1", "owner#u1", "status#paid", "all", "idem#u1#k1"]
        );
        assert_eq!(keys[1].sk, sk);
    }
}
