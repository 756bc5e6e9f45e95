//! Where the time of a run went, from the services' own histograms: `GET /metrics` of each
//! service before and after the orders run, and the mean of every histogram over the run (its
//! sum's growth divided by its count's). That gives the coordinator's time per phase, each
//! participant's time per command, and the sizes of command batches and group commits.
//!
//! Each URL reaches one replica; with several replicas behind a URL, the figures are those of
//! whichever replica answered.

use std::collections::BTreeMap;

use serde::Serialize;

/// Histogram sums and counts by series (`name{labels}` without the `_sum`/`_count` suffix).
#[derive(Clone, Debug, Default)]
pub(crate) struct Scrape {
    sums: BTreeMap<String, f64>,
    counts: BTreeMap<String, f64>,
}

impl Scrape {
    /// Reads the `_sum` and `_count` lines of a Prometheus text exposition.
    pub(crate) fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.find('{') {
                Some(i) => series.split_at(i),
                None => (series, ""),
            };
            if let Some(base) = name.strip_suffix("_sum") {
                scrape.sums.insert(format!("{base}{labels}"), value);
            } else if let Some(base) = name.strip_suffix("_count") {
                scrape.counts.insert(format!("{base}{labels}"), value);
            }
        }
        scrape
    }
}

/// The mean of one histogram over the run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Mean {
    /// `name{labels}`; a name ending in `_seconds` is reported in milliseconds.
    pub(crate) series: String,
    /// Observations during the run.
    pub(crate) count: f64,
    /// Their mean (milliseconds for durations).
    pub(crate) mean: f64,
}

/// Whether a series measures time (its name ends in `_seconds`, as Prometheus names do).
fn is_duration(series: &str) -> bool {
    series
        .split('{')
        .next()
        .is_some_and(|name| name.ends_with("_seconds"))
}

/// The means of every histogram that was observed between `before` and `after`.
pub(crate) fn means(before: &Scrape, after: &Scrape) -> Vec<Mean> {
    after
        .sums
        .iter()
        .filter_map(|(series, sum)| {
            let count = after.counts.get(series)? - before.counts.get(series).unwrap_or(&0.0);
            if count <= 0.0 {
                return None;
            }
            let sum = sum - before.sums.get(series).unwrap_or(&0.0);
            let scale = if is_duration(series) { 1000.0 } else { 1.0 };
            Some(Mean {
                series: series.clone(),
                count,
                mean: sum / count * scale,
            })
        })
        .collect()
}

/// One line per service for the text report.
pub(crate) fn summary(service: &str, means: &[Mean]) -> String {
    let items: Vec<String> = means
        .iter()
        .map(|m| {
            let unit = if is_duration(&m.series) { " ms" } else { "" };
            format!("{} {:.2}{unit}", m.series, m.mean)
        })
        .collect();
    format!("{service}: {}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE order_phase_seconds histogram
order_phase_seconds_bucket{phase=\"reserving\",le=\"0.005\"} 1
order_phase_seconds_sum{phase=\"reserving\"} 0.004
order_phase_seconds_count{phase=\"reserving\"} 1
group_commit_size_sum 10
group_commit_size_count 5
";

    const AFTER: &str = "\
order_phase_seconds_sum{phase=\"reserving\"} 0.034
order_phase_seconds_count{phase=\"reserving\"} 11
order_phase_seconds_sum{phase=\"assigning\"} 0.01
order_phase_seconds_count{phase=\"assigning\"} 2
group_commit_size_sum 40
group_commit_size_count 15
rpc_batch_size_sum 3
rpc_batch_size_count 3
";

    #[test]
    fn means_are_taken_over_the_run_only() {
        let means = means(&Scrape::parse(BEFORE), &Scrape::parse(AFTER));
        let by: BTreeMap<_, _> = means.iter().map(|m| (m.series.as_str(), m.mean)).collect();
        // (0.034 - 0.004) / 10 seconds, in milliseconds.
        assert!((by["order_phase_seconds{phase=\"reserving\"}"] - 3.0).abs() < 1e-9);
        assert!((by["order_phase_seconds{phase=\"assigning\"}"] - 5.0).abs() < 1e-9);
        // (40 - 10) / 10 writes per group, not a duration.
        assert!((by["group_commit_size"] - 3.0).abs() < 1e-9);
        assert!((by["rpc_batch_size"] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn histograms_not_observed_during_the_run_are_left_out() {
        let means = means(&Scrape::parse(AFTER), &Scrape::parse(AFTER));
        assert!(means.is_empty());
    }
}
