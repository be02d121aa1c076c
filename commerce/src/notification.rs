//! The customer's message for an order's new status.

use crate::{
    order::{Order, Status},
    outbox::Notification,
};

pub(crate) fn for_order(o: &Order) -> Notification {
    let (kind, subject, body) = match o.status {
        Status::Paid => (
            "order_confirmation",
            format!("Your order {} is confirmed", o.id),
            format!(
                "Thank you! We received your payment of {} {} for {} item(s):\n{}",
                o.total,
                o.currency,
                o.lines.iter().map(|l| l.quantity).sum::<i64>(),
                o.lines
                    .iter()
                    .map(|l| format!("- {} × {} at {}", l.quantity, l.name, l.unit_price))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        ),
        s => (
            "order_status",
            format!(
                "Your order {} is now {}",
                o.id,
                s.as_str().replace('_', " ")
            ),
            match &o.shipment {
                Some(sh) if s == Status::Shipped => format!(
                    "Your order is on its way with {} (tracking number {}).",
                    sh.carrier, sh.tracking_number
                ),
                _ => format!("Your order is now {}.", s.as_str().replace('_', " ")),
            },
        ),
    };
    Notification {
        // One notification per order version: a repeat delivery rewrites it.
        id: format!("{}-v{}", o.id, o.version),
        kind: kind.into(),
        order_id: o.id.clone(),
        user_id: o.user_id.clone(),
        to: o.email.clone(),
        subject,
        body,
    }
}

#[cfg(test)]
mod tests {
    use domain::{Currency, Price};
    use time::OffsetDateTime;

    use super::*;
    use crate::order::{OrderLine, Shipment};

    fn order(status: Status, version: u64) -> Order {
        let unit = Price::parse("19.99").unwrap();
        Order {
            id: "o1".into(),
            user_id: "u1".into(),
            email: Some("ada@example.com".into()),
            status,
            lines: vec![OrderLine {
                product_id: "p1".into(),
                name: "Socks".into(),
                quantity: 2,
                unit_price: unit,
                line_total: Price::parse("39.98").unwrap(),
            }],
            total: Price::parse("39.98").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            reserved_until: None,
            payment: None,
            shipment: None,
            history: Vec::new(),
            recommendation_id: None,
            version,
        }
    }

    #[test]
    fn a_paid_order_is_confirmed_with_its_lines() {
        let n = for_order(&order(Status::Paid, 3));
        assert_eq!(n.kind, "order_confirmation");
        assert_eq!(n.id, "o1-v3", "one notification per order version");
        assert_eq!(n.to.as_deref(), Some("ada@example.com"));
        assert!(n.body.contains("39.98 EUR for 2 item(s)"), "{}", n.body);
        assert!(n.body.contains("- 2 × Socks at 19.99"), "{}", n.body);
    }

    #[test]
    fn a_shipment_names_its_carrier_and_tracking_number() {
        let mut o = order(Status::Shipped, 5);
        o.shipment = Some(Shipment {
            carrier: "DHL".into(),
            tracking_number: "JD0001".into(),
        });
        let n = for_order(&o);
        assert_eq!(n.kind, "order_status");
        assert_eq!(n.subject, "Your order o1 is now shipped");
        assert!(
            n.body.contains("DHL (tracking number JD0001)"),
            "{}",
            n.body
        );
        let cancelled = for_order(&order(Status::PendingPayment, 1));
        assert_eq!(cancelled.subject, "Your order o1 is now pending payment");
    }
}
