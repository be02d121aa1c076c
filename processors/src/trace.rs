//! Trace context across the stream. A request's span context travels in
//! the event envelope (`traceparent`, W3C Trace Context); the consumer's
//! apply span and the websocket push it causes join that trace. With no
//! OpenTelemetry layer installed (`otel_endpoint` unset) spans have no
//! context and nothing is carried.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use opentelemetry::{Context, propagation::TextMapPropagator, trace::TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of `span`, if it belongs to a sampled trace.
pub fn of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() || !sc.is_sampled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The `traceparent` of the current span, if it belongs to a sampled trace.
pub fn current() -> Option<String> {
    of(&tracing::Span::current())
}

/// The remote context a `traceparent` names.
pub fn context(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of the trace `traceparent` names.
pub fn follow(span: &tracing::Span, traceparent: &str) {
    let _ = span.set_parent(context(traceparent));
}

/// The stock products an event changes, for the push that follows it.
fn stock_products(e: &domain::Event) -> Vec<String> {
    use domain::EventPayload as P;
    match &e.payload {
        P::ProductUpserted(p) => vec![p.id.to_string()],
        P::ProductDeleted { product_id }
        | P::StockAdjusted { product_id, .. }
        | P::StockCounted { product_id, .. } => vec![product_id.to_string()],
        P::PurchaseCompleted { lines, .. } => {
            lines.iter().map(|l| l.product_id.to_string()).collect()
        }
        P::BrowseViewed { .. } | P::BasketAdded { .. } | P::OrderStatusChanged { .. } => Vec::new(),
    }
}

/// The traces a batch's events carry: for each, a `pipeline.apply` span,
/// child of the span that published the events, open while the batch is
/// committed; and the products whose stock those events change, whose
/// pushes join the trace. Empty (and free) when no event is traced.
#[derive(Debug, Default)]
pub struct BatchTraces {
    spans: Vec<(tracing::Span, BTreeSet<String>)>,
}

impl BatchTraces {
    pub fn of(decoded: &[crate::fold::Decoded], stream: &str, shard: &str) -> Self {
        let mut by: BTreeMap<&str, (usize, BTreeSet<String>)> = BTreeMap::new();
        for d in decoded {
            if let Ok(e) = &d.outcome
                && let Some(tp) = e.traceparent.as_deref()
            {
                let (n, products) = by.entry(tp).or_default();
                *n += 1;
                products.extend(stock_products(e));
            }
        }
        let spans = by
            .into_iter()
            .map(|(tp, (events, products))| {
                let span = tracing::info_span!(parent: None, "pipeline.apply", stream, shard, events, batch = decoded.len());
                follow(&span, tp);
                (span, products)
            })
            .collect();
        Self { spans }
    }

    /// The `traceparent` a change to `product`'s stock carries.
    pub fn for_product(&self, product: &str) -> Option<String> {
        if self.spans.is_empty() {
            return None;
        }
        self.spans
            .iter()
            .find(|(_, products)| products.contains(product))
            .and_then(|(span, _)| of(span))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_a_layer_nothing_is_carried() {
        let span = tracing::info_span!("untraced");
        assert_eq!(super::of(&span), None);
    }

    #[test]
    fn a_traceparent_names_its_remote_span() {
        use opentelemetry::trace::TraceContextExt;
        let cx = super::context("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
    }
}
