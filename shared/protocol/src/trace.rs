//! W3C trace context (`traceparent`), carried in HTTP and message headers so that the log lines
//! of one order in the three services share a trace id.
//!
//! `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`; see
//! <https://www.w3.org/TR/trace-context/>.

use std::fmt;

use uuid::Uuid;

/// A position in a trace: the trace and the span that sent the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceContext {
    /// A new trace.
    pub fn root() -> Self {
        Self {
            trace_id: Uuid::new_v4().as_u128(),
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// Reads a `traceparent` header; `None` if it is not a valid version-00 value (an invalid
    /// header starts a new trace rather than failing the request).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A new span in the same trace, whose parent is this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The trace id, as 32 hex digits (the field put on log lines).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id, as 16 hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn new_span_id() -> u64 {
    // The low half of a random UUID; zero is not a valid span id.
    let id = Uuid::new_v4().as_u128() as u64;
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_children_stay_in_the_trace() {
        let root = TraceContext::root();
        let parsed = TraceContext::parse(&root.to_string()).unwrap();
        assert_eq!(parsed, root);
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let ok = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(ok.unwrap().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
