//! One order, one trace: the W3C trace context that messages carry, tied to the spans that are
//! exported over OTLP (`tracing-opentelemetry`; see `service_kit::telemetry`).
//!
//! A service continues the trace of what it receives by making the sender's span the parent of
//! its own ([`set_parent`]), and sends on the context of its current span ([`outgoing`]). With
//! export off, spans have no OpenTelemetry context; the trace ids still travel (and are logged)
//! as before, from the order's recorded `traceparent`.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use protocol::trace::TraceContext;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The exported context of `span`, if export is on.
pub fn context_of(span: &Span) -> Option<TraceContext> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    TraceContext::parse(&format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    ))
}

/// Makes `parent` (another service's span, or the order's recorded one) the parent of `span`.
/// Nothing happens when export is off.
pub fn set_parent(span: &Span, parent: TraceContext) {
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(&parent.trace_id()),
        SpanId::from_hex(&parent.span_id()),
    ) else {
        return;
    };
    let remote = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // Fails only if the span is already started, which a span just made is not.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The context to send with a message from within `span`: the span's own when exported, else
/// a new span of `trace` (as when export is off, for the logs).
pub fn outgoing(span: &Span, trace: TraceContext) -> TraceContext {
    context_of(span).unwrap_or_else(|| trace.child())
}
