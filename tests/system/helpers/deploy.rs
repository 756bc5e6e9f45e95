//! Reading what `deploy/` and `docker-compose.yml` hold: the metric names that the dashboards and
//! the alert rules use, Prometheus's scrape jobs, and the Prometheus text format the services
//! export.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Grafana dashboards.
pub const DASHBOARDS: &str = "deploy/grafana/dashboards";
/// Prometheus's configuration.
pub const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
/// The alert rules.
pub const RULES: &str = "deploy/prometheus/rules";

/// Names that Prometheus makes itself (per scrape, and for alerts), not any exporter.
pub const PROMETHEUS_OWN: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
];

/// The files in `dir` (relative to the root) whose names end with `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// A YAML file, with its merge keys (`<<: *anchor`) applied.
pub fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: Yaml =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    value
}

/// A JSON file.
pub fn json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboards (each target's `expr`), with where it is.
pub fn dashboard_expressions() -> Vec<(String, String)> {
    fn walk(value: &Json, file: &str, out: &mut Vec<(String, String)>) {
        match value {
            Json::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Json::String(expr)) => {
                            let title = map.get("refId").and_then(Json::as_str).unwrap_or("?");
                            out.push((format!("{file} target {title}"), expr.clone()));
                        }
                        _ => walk(value, file, out),
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|item| walk(item, file, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for path in files(DASHBOARDS, ".json") {
        let name = path.display().to_string();
        walk(&json(&path), &name, &mut out);
    }
    out
}

/// Every expression of the alert rules, with the alert's name.
pub fn rule_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in files(RULES, ".yml") {
        let rules = yaml(&path);
        let groups = rules["groups"].as_sequence().expect("groups");
        for rule in groups
            .iter()
            .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .expect("alert or record name");
            let expr = rule["expr"].as_str().expect("expr");
            out.push((format!("{} {name}", path.display()), expr.to_owned()));
        }
    }
    out
}

/// Aggregation operators and keywords of PromQL that may stand without parentheses after them.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names that a PromQL expression selects: its identifiers that are not functions,
/// keywords or label names, outside strings, label matchers (`{…}`), ranges (`[…]`) and Grafana's
/// variables (`$__rate_interval`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening `open` at `i` past its matching `close`, over strings.
    let skip_group = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                quote @ ('"' | '\'' | '`') => {
                    i += 1;
                    while i < chars.len() && chars[i] != quote {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(i, '{', '}');
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`0.99`, `1e3`, `5m`).
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if called {
                    i = skip_group(next, '(', ')');
                }
            } else if !called && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names used by the dashboards and the alert rules, each with one place it is used.
pub fn used_metric_names() -> BTreeMap<String, String> {
    let mut used = BTreeMap::new();
    for (place, expr) in dashboard_expressions()
        .into_iter()
        .chain(rule_expressions())
    {
        for name in metric_names(&expr) {
            used.entry(name).or_insert_with(|| place.clone());
        }
    }
    used
}

/// A scrape job of Prometheus's configuration.
#[derive(Clone, Debug)]
pub struct ScrapeJob {
    /// `job_name`.
    pub name: String,
    /// `metrics_path` (`/metrics` by default).
    pub path: String,
    /// `params`, as a query string (empty if none).
    pub query: String,
    /// Its static targets, `host:port`.
    pub targets: Vec<String>,
}

/// The scrape jobs of `deploy/prometheus/prometheus.yml`.
pub fn scrape_jobs() -> Vec<ScrapeJob> {
    let config = yaml(&root().join(PROMETHEUS_CONFIG));
    config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .map(|job| {
            let mut query = Vec::new();
            if let Some(params) = job["params"].as_mapping() {
                for (key, values) in params {
                    for value in values.as_sequence().expect("a list of values") {
                        query.push(format!(
                            "{}={}",
                            key.as_str().expect("parameter name"),
                            value.as_str().expect("parameter value")
                        ));
                    }
                }
            }
            ScrapeJob {
                name: job["job_name"].as_str().expect("job_name").to_owned(),
                path: job["metrics_path"]
                    .as_str()
                    .unwrap_or("/metrics")
                    .to_owned(),
                query: query.join("&"),
                targets: job["static_configs"]
                    .as_sequence()
                    .expect("static_configs")
                    .iter()
                    .flat_map(|c| c["targets"].as_sequence().expect("targets"))
                    .map(|t| t.as_str().expect("target").to_owned())
                    .collect(),
            }
        })
        .collect()
}

/// What one `/metrics` answer holds.
#[derive(Debug, Default)]
pub struct Exposition {
    /// The name of every sample (`orders_total`, `order_phase_seconds_bucket`, …).
    pub samples: BTreeSet<String>,
    /// Every metric family with a `# TYPE` line.
    pub typed: BTreeSet<String>,
    /// Every metric family with a `# HELP` line.
    pub described: BTreeSet<String>,
}

impl Exposition {
    /// Reads the Prometheus text format.
    pub fn parse(text: &str) -> Self {
        let mut exposition = Self::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let family = |rest: &str| rest.split_whitespace().next().unwrap_or("").to_owned();
            if let Some(rest) = line.strip_prefix("# HELP ") {
                exposition.described.insert(family(rest));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                exposition.typed.insert(family(rest));
            } else if !line.starts_with('#') {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                exposition.samples.insert(line[..end].to_owned());
            }
        }
        exposition
    }

    /// Whether `name` is exported, as a sample or a family.
    pub fn has(&self, name: &str) -> bool {
        self.samples.contains(name) || self.typed.contains(name)
    }
}

/// The value of the sample `series` (name and labels exactly as exported), if exported.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
