//! CPU time per process group over a run, read from Linux's `/proc`, for a system that runs on the
//! same machine as `bench` (as on a development machine or in `BENCHMARKS.md`).
//!
//! A sample sums the user and system time of every process by group (PostgreSQL, RabbitMQ, each
//! service, `bench` itself, the rest) and the machine's busy and idle time; the difference of two
//! samples, divided by the orders answered in between, is the CPU each group spent per order.
//! Processes that start and end between the two samples are not seen (the services' database
//! connections and broker connections live for the whole run).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of the times in `/proc` (`USER_HZ`, 100 on every Linux architecture the
/// services run on).
const TICKS_PER_SECOND: f64 = 100.0;

/// Why `/proc` could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CpuError {
    /// Not Linux, or `/proc` is not mounted.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A line that does not look like `/proc/stat`.
    #[error("unexpected contents of /proc/stat")]
    Format,
}

/// The group a process counts in, by its command name (which the kernel cuts to 15 bytes).
fn group(comm: &str, pid: u32) -> &'static str {
    if pid == std::process::id() {
        return "bench";
    }
    match comm {
        "postgres" => "postgresql",
        "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => "rabbitmq",
        "order-service" => "order-service",
        "store-service" => "store-service",
        // `delivery-service` is 16 bytes long.
        "delivery-servic" => "delivery-service",
        _ => "other",
    }
}

/// CPU ticks so far: per group, and of the whole machine.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    at: Instant,
    groups: BTreeMap<&'static str, u64>,
    busy: u64,
    idle: u64,
}

impl Sample {
    /// Reads `/proc`.
    pub(crate) fn take() -> Result<Self, CpuError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| CpuError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let (busy, idle) = machine_ticks(&read("/proc/stat")?)?;
        let mut groups = BTreeMap::new();
        let entries = std::fs::read_dir("/proc").map_err(|source| CpuError::Read {
            path: "/proc".to_owned(),
            source,
        })?;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // A process may end between listing and reading: it is simply not counted.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((comm, ticks)) = process_ticks(&stat) {
                *groups.entry(group(comm, pid)).or_insert(0) += ticks;
            }
        }
        Ok(Self {
            at: Instant::now(),
            groups,
            busy,
            idle,
        })
    }
}

/// `(busy, idle)` ticks of all CPUs from `/proc/stat`'s first line (idle counts I/O wait too).
fn machine_ticks(stat: &str) -> Result<(u64, u64), CpuError> {
    let line = stat.lines().next().ok_or(CpuError::Format)?;
    let mut fields = line.split_whitespace();
    if fields.next() != Some("cpu") {
        return Err(CpuError::Format);
    }
    let values: Vec<u64> = fields
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| CpuError::Format)?;
    // user nice system idle iowait irq softirq steal …
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    let idle = at(3) + at(4);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Ok((busy, idle))
}

/// The command name and user + system ticks of one `/proc/<pid>/stat`.
fn process_ticks(stat: &str) -> Option<(&str, u64)> {
    // pid (comm) state ppid … utime is the 14th field, stime the 15th; comm may hold spaces and
    // parentheses, so the fields are counted from the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// A first sample if `enabled`. A machine without `/proc` gets a warning, not a failed run: the
/// figures are an extra.
pub(crate) fn start(enabled: bool) -> Option<Sample> {
    if !enabled {
        return None;
    }
    Sample::take()
        .inspect_err(|err| eprintln!("warning: no CPU figures: {err}"))
        .ok()
}

/// The CPU spent since `before` (from [`start`]), per order.
pub(crate) fn finish(before: Option<Sample>, orders: u64) -> Option<Usage> {
    Usage::since(&before?, orders)
        .inspect_err(|err| eprintln!("warning: no CPU figures: {err}"))
        .ok()
}

/// CPU spent between two samples.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Usage {
    /// Seconds between the samples.
    pub(crate) seconds: f64,
    /// Logical CPUs of the machine.
    pub(crate) cpus: usize,
    /// Share of the machine's CPU time that was busy, 0 to 1.
    pub(crate) machine_busy: f64,
    /// CPU milliseconds per order, by process group.
    pub(crate) ms_per_order: BTreeMap<String, f64>,
    /// The machine's busy CPU milliseconds per order, all processes and the kernel together.
    pub(crate) machine_ms_per_order: f64,
}

impl Usage {
    /// From `before` until now, for `orders` orders answered in between.
    pub(crate) fn since(before: &Sample, orders: u64) -> Result<Self, CpuError> {
        let after = Sample::take()?;
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        let orders = orders.max(1) as f64;
        let ms = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1000.0 / orders;
        let ms_per_order = after
            .groups
            .iter()
            .map(|(name, ticks)| {
                let spent = ticks.saturating_sub(before.groups.get(name).copied().unwrap_or(0));
                ((*name).to_owned(), ms(spent))
            })
            .collect();
        let busy = after.busy.saturating_sub(before.busy);
        let idle = after.idle.saturating_sub(before.idle);
        Ok(Self {
            seconds,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            machine_busy: busy as f64 / (busy + idle).max(1) as f64,
            ms_per_order,
            machine_ms_per_order: ms(busy),
        })
    }

    /// One line for the text report.
    pub(crate) fn summary(&self) -> String {
        let groups: Vec<String> = self
            .ms_per_order
            .iter()
            .filter(|(_, ms)| **ms >= 0.005)
            .map(|(name, ms)| format!("{name} {ms:.2}"))
            .collect();
        format!(
            "machine {:.0} % busy ({} CPUs), {:.2} ms per order; by process, ms per order: {}",
            self.machine_busy * 100.0,
            self.cpus,
            self.machine_ms_per_order,
            groups.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_process_stat_whose_name_has_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 8 0";
        assert_eq!(process_ticks(stat), Some(("tokio (rt) x", 1234 + 567)));
    }

    #[test]
    fn reads_the_machine_line_of_proc_stat() {
        let stat = "cpu  100 2 30 400 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            machine_ticks(stat).ok(),
            Some((100 + 2 + 30 + 6 + 7 + 8, 400 + 5))
        );
    }

    #[test]
    fn rejects_what_is_not_proc_stat() {
        assert!(machine_ticks("intr 1 2 3\n").is_err());
    }

    #[test]
    fn groups_processes_by_their_kernel_name() {
        assert_eq!(group("delivery-servic", 1), "delivery-service");
        assert_eq!(group("postgres", 1), "postgresql");
        assert_eq!(group("beam.smp", 1), "rabbitmq");
        assert_eq!(group("kworker/0:1", 1), "other");
        assert_eq!(group("anything", std::process::id()), "bench");
    }
}
