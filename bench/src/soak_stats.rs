//! What the soak came to, as `bench run --scenario soak` prints and records it.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the soak came to, beside the day's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Stats {
    /// Orders sent (one key each).
    pub(crate) orders: u64,
    /// Requests sent for them, retries with the same key included.
    pub(crate) requests: u64,
    /// Orders by the end the customer was told (`placed`, `not_placed:<reason>`, `pending`,
    /// `error:<what>` when no answer came).
    pub(crate) answers: BTreeMap<String, u64>,
    /// Orders by their recorded end (`not_placed:<reason>`, `delivered`, `cancelled`).
    pub(crate) ends: BTreeMap<String, u64>,
    /// Orders that got no answer with an id.
    pub(crate) unanswered: u64,
    /// Answered order ids that are not recorded.
    pub(crate) lost: u64,
    /// Keys with more than one order, or answered with another order than their own.
    pub(crate) duplicated: u64,
    /// `201` answers for an order that did not end placed or further.
    pub(crate) false_placed: u64,
    /// `409` answers for an order that did not end `not_placed`.
    pub(crate) false_not_placed: u64,
    /// Orders not final after the settle time.
    pub(crate) unfinished: u64,
    /// The operator's actions, `<action> <status>` and how many.
    pub(crate) operator: BTreeMap<String, u64>,
    /// Restocks that surely added their packets.
    pub(crate) restocks: u64,
    /// The faults from the fault log, each with its window and the `timeout` refusals in it.
    pub(crate) windows: Vec<Window>,
    /// `timeout` refusals outside every window.
    pub(crate) timeouts_outside: u64,
}

/// A fault's window: from the fault's start to `--fault-window` after its end.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Window {
    /// The fault, as the nemesis named it.
    pub(crate) fault: String,
    /// Seconds from the first fault's start.
    pub(crate) from_s: f64,
    /// Seconds from the first fault's start.
    pub(crate) until_s: f64,
    /// `timeout` refusals whose order lived in the window.
    pub(crate) timeouts: u64,
    /// Its span, Unix milliseconds.
    #[serde(skip)]
    pub(crate) span: (u128, u128),
}

impl Stats {
    /// The soak in a few lines of text.
    pub(crate) fn summary(&self) -> Vec<String> {
        let join = |map: &BTreeMap<String, u64>| {
            map.iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut lines = vec![
            format!(
                "{} orders in {} requests; answered: {}",
                self.orders,
                self.requests,
                join(&self.answers)
            ),
            format!("recorded ends: {}", join(&self.ends)),
            format!(
                "unanswered {}, lost {}, duplicated {}, false placed {}, false not placed {}, \
                 unfinished {}",
                self.unanswered,
                self.lost,
                self.duplicated,
                self.false_placed,
                self.false_not_placed,
                self.unfinished
            ),
            format!(
                "operator: {}; restocks: {}",
                join(&self.operator),
                self.restocks
            ),
            format!(
                "{} faults; timeout refusals outside their windows: {}",
                self.windows.len(),
                self.timeouts_outside
            ),
        ];
        lines.extend(self.windows.iter().map(|w| {
            format!(
                "  {:>7.1}s to {:>7.1}s  {:<40} timeout refusals {}",
                w.from_s, w.until_s, w.fault, w.timeouts
            )
        }));
        lines
    }
}
