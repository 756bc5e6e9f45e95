//! `bench targets`: the speed targets of the project, each a ratio to the single-database
//! baseline, measured in one invocation.
//!
//! 1. **Peak**: the best distributed throughput of a sweep over clients against the baseline's
//!    best in the same sweep.
//! 2. **Moderate load**: the ratio at 16 clients.
//! 3. **Latency**: one client's p50 against the baseline's one-client p50.
//! 4. **Steady arrivals**: the highest open-loop rate whose p99 stays within a limit (a search
//!    over rates), against the baseline's peak.
//!
//! Every run of the sweep and of the search ends with the invariant check, like `bench run`.

use std::time::Duration;

use serde::Serialize;

use crate::report::{RunReport, SweepPoint};
use crate::{RunArgs, Target};

/// What the four targets ask (the goals).
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Goals {
    /// Peak distributed throughput ≥ this × the baseline's peak.
    pub(crate) peak_ratio: f64,
    /// Throughput at 16 clients ≥ this × the baseline's at 16 clients.
    pub(crate) moderate_ratio: f64,
    /// One client's p50 ≤ this × the baseline's one-client p50.
    pub(crate) latency_factor: f64,
    /// The highest rate with p99 within the limit ≥ this × the baseline's peak.
    pub(crate) steady_ratio: f64,
}

/// The project's targets.
pub(crate) const GOALS: Goals = Goals {
    peak_ratio: 1.0,
    moderate_ratio: 0.3,
    latency_factor: 6.0,
    steady_ratio: 0.15,
};

/// How the search over open-loop rates runs.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Search {
    /// The p99 a rate must keep, milliseconds.
    pub(crate) p99_limit_ms: f64,
    /// How many rates to try.
    pub(crate) steps: usize,
    /// How long each rate runs.
    #[serde(with = "as_seconds")]
    pub(crate) duration: Duration,
}

mod as_seconds {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One rate tried by the search.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RateTried {
    /// Orders per second asked.
    pub(crate) rate: f64,
    /// Orders per second answered.
    pub(crate) achieved: f64,
    /// p99, milliseconds (from each order's scheduled send time).
    pub(crate) p99_ms: f64,
    /// Whether the rate kept the limit: p99 within it, every order answered `201`, and the
    /// rate achieved.
    pub(crate) kept: bool,
}

/// What one invocation measured, target by target.
#[derive(Debug, Serialize)]
pub(crate) struct Measured {
    /// The best distributed throughput of the sweep, and at how many clients.
    pub(crate) peak: (f64, usize),
    /// The baseline's best of the sweep, and at how many clients.
    pub(crate) baseline_peak: (f64, usize),
    /// Distributed and baseline throughput at 16 clients.
    pub(crate) at_16: (f64, f64),
    /// Distributed and baseline p50 at one client, milliseconds.
    pub(crate) p50_one_client: (f64, f64),
    /// Every rate the search tried, in order.
    pub(crate) rates: Vec<RateTried>,
    /// The highest rate that kept the limit (0 if none did).
    pub(crate) steady_rate: f64,
}

/// The four results against their goals.
#[derive(Debug, Serialize)]
pub(crate) struct Verdict {
    /// Measured peak ratio.
    pub(crate) peak_ratio: f64,
    /// Measured ratio at 16 clients.
    pub(crate) moderate_ratio: f64,
    /// Measured one-client p50 factor.
    pub(crate) latency_factor: f64,
    /// Measured steady rate over the baseline's peak.
    pub(crate) steady_ratio: f64,
    /// Which targets are met, in order 1 to 4.
    pub(crate) met: [bool; 4],
}

impl Measured {
    /// The verdict against `goals`.
    pub(crate) fn verdict(&self, goals: &Goals) -> Verdict {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let peak_ratio = ratio(self.peak.0, self.baseline_peak.0);
        let moderate_ratio = ratio(self.at_16.0, self.at_16.1);
        let latency_factor = ratio(self.p50_one_client.0, self.p50_one_client.1);
        let steady_ratio = ratio(self.steady_rate, self.baseline_peak.0);
        Verdict {
            peak_ratio,
            moderate_ratio,
            latency_factor,
            steady_ratio,
            met: [
                peak_ratio >= goals.peak_ratio,
                moderate_ratio >= goals.moderate_ratio,
                latency_factor > 0.0 && latency_factor <= goals.latency_factor,
                steady_ratio >= goals.steady_ratio,
            ],
        }
    }
}

/// The whole report of `bench targets`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    goals: Goals,
    search: Search,
    measured: Measured,
    verdict: Verdict,
    /// No invariant broken in any run.
    correct: bool,
}

/// Client counts the sweep must include for targets 2 and 3.
const REQUIRED_CLIENTS: [usize; 2] = [1, 16];

/// Runs the sweep over `clients` (1 and 16 are added if missing), then the search over rates,
/// and prints each run and the verdict. Returns whether every run kept the invariants.
pub(crate) async fn run(
    target: &Target,
    args: &RunArgs,
    clients: &[usize],
    search: Search,
    plot: Option<&str>,
) -> anyhow::Result<bool> {
    let mut clients: Vec<usize> = clients.iter().copied().chain(REQUIRED_CLIENTS).collect();
    clients.sort_unstable();
    clients.dedup();
    let mut correct = true;
    let mut points = Vec::new();
    let mut reports = Vec::new();
    for &n in &clients {
        let args = RunArgs {
            clients: n,
            rate: None,
            no_baseline: false,
            ..args.clone()
        };
        let report = crate::run(target, &args).await?;
        report.print(args.json);
        correct &= report.is_correct();
        points.push(SweepPoint::from(&report));
        reports.push(report);
    }
    if let Some(path) = plot {
        crate::report::plot(&points, path)?;
        eprintln!("plot written to {path}");
    }
    let at = |n: usize| reports.iter().find(|r| r.clients == n);
    let best = |pick: &dyn Fn(&RunReport) -> Option<f64>| {
        reports
            .iter()
            .filter_map(|r| pick(r).map(|v| (v, r.clients)))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
    };
    let peak = best(&|r| Some(r.distributed.orders_per_second));
    let baseline_peak = best(&|r| r.baseline.as_ref().map(|b| b.orders_per_second));
    let side_pair = |n: usize, pick: &dyn Fn(&crate::report::Side) -> f64| {
        at(n).map_or((0.0, 0.0), |r| {
            (pick(&r.distributed), r.baseline.as_ref().map_or(0.0, pick))
        })
    };
    let at_16 = side_pair(16, &|s| s.orders_per_second);
    let p50_one_client = side_pair(1, &|s| s.p50_ms);

    // The search starts at half the 16-client throughput (open loops keep fewer orders in
    // flight than closed ones at the same throughput), doubles while rates are kept, then
    // halves the interval between the highest kept and the lowest not kept.
    let mut rates = Vec::new();
    let (mut kept, mut missed): (f64, Option<f64>) = (0.0, None);
    let mut rate = (at_16.0 / 2.0).max(10.0).round();
    for _ in 0..search.steps.max(1) {
        let args = RunArgs {
            rate: Some(rate),
            duration: Some(search.duration),
            orders: None,
            no_baseline: true,
            ..args.clone()
        };
        let report = crate::run(target, &args).await?;
        report.print(args.json);
        correct &= report.is_correct();
        let d = &report.distributed;
        let all_placed = d.outcomes.iter().all(|(label, _)| label == "placed");
        let tried = RateTried {
            rate,
            achieved: d.orders_per_second,
            p99_ms: d.p99_ms,
            kept: d.p99_ms <= search.p99_limit_ms
                && all_placed
                && d.orders_per_second >= 0.95 * rate,
        };
        if tried.kept {
            kept = kept.max(rate);
        } else {
            missed = Some(missed.map_or(rate, |m: f64| m.min(rate)));
        }
        rates.push(tried);
        rate = match missed {
            None => rate * 2.0,
            Some(missed) => ((kept + missed) / 2.0).round(),
        };
        if missed.is_some_and(|m| m - kept <= (kept * 0.05).max(5.0)) {
            break;
        }
    }
    let measured = Measured {
        peak,
        baseline_peak,
        at_16,
        p50_one_client,
        rates,
        steady_rate: kept,
    };
    let verdict = measured.verdict(&GOALS);
    let report = Report {
        goals: GOALS,
        search,
        measured,
        verdict,
        correct,
    };
    report.print(args.json);
    Ok(correct)
}

impl Report {
    fn print(&self, json: bool) {
        if json {
            match serde_json::to_string(self) {
                Ok(line) => println!("{line}"),
                Err(err) => eprintln!("cannot print the report: {err}"),
            }
            return;
        }
        let (m, v, g) = (&self.measured, &self.verdict, &self.goals);
        let yes = |met: bool| if met { "met" } else { "not met" };
        println!("\nrates tried (p99 limit {} ms):", self.search.p99_limit_ms);
        for r in &m.rates {
            println!(
                "  {:>6.0}/s: achieved {:>6.0}/s, p99 {:>7.1} ms, {}",
                r.rate,
                r.achieved,
                r.p99_ms,
                if r.kept { "kept" } else { "not kept" }
            );
        }
        println!("\ntargets (each against the baseline of this invocation):");
        println!(
            "1. peak: {:.0}/s at {} clients / baseline {:.0}/s at {} = {:.2} (goal ≥ {:.2}): {}",
            m.peak.0,
            m.peak.1,
            m.baseline_peak.0,
            m.baseline_peak.1,
            v.peak_ratio,
            g.peak_ratio,
            yes(v.met[0])
        );
        println!(
            "2. 16 clients: {:.0}/s / baseline {:.0}/s = {:.2} (goal ≥ {:.2}): {}",
            m.at_16.0,
            m.at_16.1,
            v.moderate_ratio,
            g.moderate_ratio,
            yes(v.met[1])
        );
        println!(
            "3. one client p50: {:.1} ms / baseline {:.2} ms = {:.1}× (goal ≤ {:.0}×): {}",
            m.p50_one_client.0,
            m.p50_one_client.1,
            v.latency_factor,
            g.latency_factor,
            yes(v.met[2])
        );
        println!(
            "4. steady rate with p99 ≤ {} ms: {:.0}/s / baseline peak {:.0}/s = {:.2} (goal ≥ {:.2}): {}",
            self.search.p99_limit_ms,
            m.steady_rate,
            m.baseline_peak.0,
            v.steady_ratio,
            g.steady_ratio,
            yes(v.met[3])
        );
        if !self.correct {
            println!("VIOLATIONS in at least one run (see above)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(steady_rate: f64) -> Measured {
        Measured {
            peak: (1_000.0, 256),
            baseline_peak: (4_000.0, 8),
            at_16: (400.0, 4_000.0),
            p50_one_client: (6.0, 0.5),
            rates: Vec::new(),
            steady_rate,
        }
    }

    #[test]
    fn each_target_is_a_ratio_to_the_same_invocations_baseline() {
        let v = measured(600.0).verdict(&GOALS);
        assert!((v.peak_ratio - 0.25).abs() < 1e-9);
        assert!((v.moderate_ratio - 0.1).abs() < 1e-9);
        assert!((v.latency_factor - 12.0).abs() < 1e-9);
        assert!((v.steady_ratio - 0.15).abs() < 1e-9);
        assert_eq!(v.met, [false, false, false, true]);
    }

    #[test]
    fn a_missing_measurement_meets_no_target() {
        let mut m = measured(0.0);
        m.p50_one_client = (0.0, 0.0);
        m.baseline_peak = (0.0, 0);
        assert_eq!(m.verdict(&GOALS).met, [false, false, false, false]);
    }
}
