//! Reports: a text table, JSON, and the SVG plot of a sweep.

use std::collections::BTreeMap;

use plotters::prelude::*;
use serde::Serialize;

use crate::RunArgs;
use crate::breakdown::{self, Mean};
use crate::cpu::Usage;
use crate::day_stats::Stats;
use crate::distributed::Checked;
use crate::scenario::Scenario;

/// One side of a run (distributed or baseline).
#[derive(Debug, Serialize)]
pub(crate) struct Side {
    /// Orders answered.
    pub(crate) orders: u64,
    /// Seconds from the first order sent to the last answered.
    pub(crate) seconds: f64,
    /// Orders per second.
    pub(crate) orders_per_second: f64,
    /// Orders by outcome.
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub(crate) max_ms: f64,
    /// Orders answered `pending` that finished later (distributed only).
    pub(crate) finished_later: u64,
    /// Broken invariants.
    pub(crate) violations: Vec<String>,
    /// CPU per order while the orders ran (`--cpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu: Option<Usage>,
    /// The services' histogram means over the run, by service (`--breakdown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) breakdown: Option<Vec<(String, Vec<Mean>)>>,
    /// What the delivery day came to (`day`, `soak`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) day: Option<Stats>,
    /// What the soak's checker found (`soak`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) soak: Option<crate::soak_stats::Stats>,
}

impl From<Checked> for Side {
    fn from(checked: Checked) -> Self {
        let m = &checked.measured;
        let ms = |q: f64| m.latency.value_at_quantile(q) as f64 / 1000.0;
        let seconds = m.elapsed.as_secs_f64();
        Self {
            orders: m.orders(),
            seconds,
            orders_per_second: if seconds > 0.0 {
                m.orders() as f64 / seconds
            } else {
                0.0
            },
            outcomes: m.outcomes.clone(),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: m.latency.max() as f64 / 1000.0,
            finished_later: checked.finished_later,
            violations: checked.violations,
            cpu: checked.cpu,
            breakdown: checked.breakdown,
            day: checked.day,
            soak: checked.soak,
        }
    }
}

/// A whole run.
#[derive(Debug, Serialize)]
pub(crate) struct RunReport {
    /// The scenario.
    pub(crate) scenario: Scenario,
    /// Closed-loop clients (ignored in open loop).
    pub(crate) clients: usize,
    /// Open-loop rate, orders per second.
    pub(crate) rate: Option<f64>,
    /// Through the services.
    pub(crate) distributed: Side,
    /// In one database, same run.
    pub(crate) baseline: Option<Side>,
    /// distributed / baseline throughput.
    pub(crate) ratio: Option<f64>,
}

impl RunReport {
    /// Assembles a report.
    pub(crate) fn new(args: &RunArgs, distributed: Checked, baseline: Option<Checked>) -> Self {
        let distributed = Side::from(distributed);
        let baseline = baseline.map(Side::from);
        let ratio = baseline
            .as_ref()
            .filter(|b| b.orders_per_second > 0.0)
            .map(|b| distributed.orders_per_second / b.orders_per_second);
        Self {
            scenario: args.scenario,
            clients: args.clients,
            rate: args.rate,
            distributed,
            baseline,
            ratio,
        }
    }

    /// No invariant broken on either side.
    pub(crate) fn is_correct(&self) -> bool {
        self.distributed.violations.is_empty()
            && self
                .baseline
                .as_ref()
                .is_none_or(|b| b.violations.is_empty())
    }

    /// Prints the report (JSON on one line, or a table).
    pub(crate) fn print(&self, json: bool) {
        if json {
            match serde_json::to_string(self) {
                Ok(line) => println!("{line}"),
                Err(err) => eprintln!("cannot print the report: {err}"),
            }
            return;
        }
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} orders/s"),
            None => format!("{} clients, closed loop", self.clients),
        };
        println!("\nscenario {:?}, {load}", self.scenario);
        println!(
            "{:<12} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "", "orders", "seconds", "orders/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let row = |name: &str, s: &Side| {
            println!(
                "{name:<12} {:>8} {:>8.1} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                s.orders, s.seconds, s.orders_per_second, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
        };
        row("distributed", &self.distributed);
        if let Some(baseline) = &self.baseline {
            row("baseline", baseline);
        }
        if let Some(ratio) = self.ratio {
            println!("ratio (distributed / baseline throughput): {ratio:.2}");
        }
        for (name, side) in [
            ("distributed", Some(&self.distributed)),
            ("baseline", self.baseline.as_ref()),
        ] {
            let Some(side) = side else { continue };
            let outcomes: Vec<String> = side
                .outcomes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("{name} outcomes: {}", outcomes.join(" "));
            for line in side.day.iter().flat_map(Stats::summary) {
                println!("{name} day: {line}");
            }
            for line in side.soak.iter().flat_map(crate::soak_stats::Stats::summary) {
                println!("{name} soak: {line}");
            }
            if let Some(cpu) = &side.cpu {
                println!("{name} CPU: {}", cpu.summary());
            }
            for (service, means) in side.breakdown.iter().flatten() {
                println!("{name} breakdown, {}", breakdown::summary(service, means));
            }
            if side.finished_later > 0 {
                println!(
                    "{name}: {} answered pending, final later",
                    side.finished_later
                );
            }
            if side.violations.is_empty() {
                println!("{name} invariants: ok");
            } else {
                println!("{name} VIOLATIONS:");
                for v in &side.violations {
                    println!("  {v}");
                }
            }
        }
    }
}

/// One point of a sweep.
#[derive(Debug, Clone)]
pub(crate) struct SweepPoint {
    clients: usize,
    distributed: (f64, f64),
    baseline: Option<(f64, f64)>,
}

impl From<&RunReport> for SweepPoint {
    fn from(report: &RunReport) -> Self {
        Self {
            clients: report.clients,
            distributed: (
                report.distributed.orders_per_second,
                report.distributed.p99_ms,
            ),
            baseline: report
                .baseline
                .as_ref()
                .map(|b| (b.orders_per_second, b.p99_ms)),
        }
    }
}

/// Writes an SVG with throughput and p99 against clients, distributed beside baseline.
pub(crate) fn plot(points: &[SweepPoint], path: &str) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    // Client counts usually double from point to point: a logarithmic axis spaces them evenly.
    let min_clients = points.iter().map(|p| p.clients).min().unwrap_or(1).max(1) as f64;
    let max_clients = points.iter().map(|p| p.clients).max().unwrap_or(1).max(1) as f64;
    let series = |f: &dyn Fn(&SweepPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| f(p).map(|y| (p.clients as f64, y)))
            .collect()
    };
    for (area, title, unit, pick) in [
        (
            &left,
            "throughput",
            "orders/s",
            [
                Box::new(|p: &SweepPoint| Some(p.distributed.0))
                    as Box<dyn Fn(&SweepPoint) -> Option<f64>>,
                Box::new(|p: &SweepPoint| p.baseline.map(|b| b.0)),
            ],
        ),
        (
            &right,
            "p99 latency",
            "ms",
            [
                Box::new(|p: &SweepPoint| Some(p.distributed.1))
                    as Box<dyn Fn(&SweepPoint) -> Option<f64>>,
                Box::new(|p: &SweepPoint| p.baseline.map(|b| b.1)),
            ],
        ),
    ] {
        let distributed = series(&*pick[0]);
        let baseline = series(&*pick[1]);
        let top = distributed
            .iter()
            .chain(&baseline)
            .map(|(_, y)| *y)
            .fold(1.0_f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title} vs clients"), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((min_clients / 1.2..max_clients * 1.2).log_scale(), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("clients (logarithmic)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(unit)
            .draw()?;
        chart
            .draw_series(LineSeries::new(distributed.clone(), BLUE.stroke_width(2)))?
            .label("distributed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart.draw_series(
            distributed
                .iter()
                .map(|p| Circle::new(*p, 3, BLUE.filled())),
        )?;
        if !baseline.is_empty() {
            chart
                .draw_series(LineSeries::new(baseline.clone(), RED.stroke_width(2)))?
                .label("single database")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart.draw_series(baseline.iter().map(|p| Circle::new(*p, 3, RED.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
