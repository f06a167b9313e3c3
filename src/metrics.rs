//! What the relay counts for `/metrics` (Prometheus text format): counters, counters by
//! label, and latency histograms. Owned by the application state; no globals.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters keyed by label values (a few dozen series at most: connections × outcomes).
#[derive(Default)]
pub struct Labelled(Mutex<BTreeMap<Vec<String>, u64>>);

impl Labelled {
    pub fn inc(&self, values: &[&str]) {
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (values, count) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "{name}{} {count}", braces(&label_set(labels, values)));
        }
    }
}

/// Upper bounds, in seconds, of the latency buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Series {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_micros: u64,
}

/// Latency histograms keyed by label values (none for a plain histogram).
#[derive(Default)]
pub struct Histogram(Mutex<BTreeMap<Vec<String>, Series>>);

impl Histogram {
    pub fn observe(&self, values: &[&str], took: Duration) {
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let series = all.entry(key).or_default();
        let seconds = took.as_secs_f64();
        for (bucket, bound) in series.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        series.count += 1;
        series.sum_micros += took.as_micros() as u64;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (values, series) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let set = label_set(labels, values);
            let sep = if set.is_empty() { "" } else { "," };
            for (count, bound) in series.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(out, "{name}_bucket{{{set}{sep}le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{{set}{sep}le=\"+Inf\"}} {}", series.count);
            let _ = writeln!(
                out,
                "{name}_sum{} {}",
                braces(&set),
                series.sum_micros as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{} {}", braces(&set), series.count);
        }
    }
}

fn braces(set: &str) -> String {
    if set.is_empty() {
        String::new()
    } else {
        format!("{{{set}}}")
    }
}

fn label_set(labels: &[&str], values: &[String]) -> String {
    labels
        .iter()
        .zip(values)
        .map(|(label, value)| format!("{label}=\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Default)]
pub struct Metrics {
    pub sessions_created: Counter,
    pub scans: Counter,
    pub confirmations: Counter,
    pub cancellations: Counter,
    pub redemptions: Counter,
    pub websockets_opened: Counter,
    pub pool_hits: Counter,
    pub pool_misses: Counter,
    pub pool_refilled: Counter,
    pub pool_refill_errors: Counter,
    /// Refills stopped because the AppID's `getwxacodeunlimit` budget for the minute was spent.
    pub pool_budget_spent: Counter,
    pub rate_limited: Counter,
    /// Codes converted to JPEG (once per session that asks).
    pub jpeg_conversions: Counter,
    /// Session changes made by this instance, by connection and the status reached.
    pub transitions: Labelled,
    /// Commit of a change (on any instance) → its frame written to a browser's socket here.
    pub push_latency: Histogram,
    /// WeChat calls by endpoint and outcome (`ok`, an errcode, `unreachable`, …).
    pub wechat_calls: Labelled,
    /// WeChat call latency by endpoint.
    pub wechat_latency: Histogram,
    /// Requests refused by a limit or cap, by the setting's name.
    pub limits_hit: Labelled,
    /// Redis call latency by operation.
    pub store_latency: Histogram,
}

impl Metrics {
    /// A session reached `status` (`Pending`: it started).
    pub fn transition(&self, connection: &str, status: crate::session::Status) {
        use crate::session::Status;
        match status {
            Status::Pending => self.sessions_created.inc(),
            Status::Scanned => self.scans.inc(),
            Status::Confirmed => self.confirmations.inc(),
            Status::Cancelled => self.cancellations.inc(),
            Status::Redeemed => self.redemptions.inc(),
            _ => {}
        }
        self.transitions.inc(&[connection, &status.name()]);
    }

    /// The labelled series, in Prometheus text format.
    pub fn render_families(&self, out: &mut String) {
        self.transitions.render(
            out,
            "qrlogin_session_transitions_total",
            "Session changes made by this instance, by connection and status reached (pending: started).",
            &["connection", "status"],
        );
        self.push_latency.render(
            out,
            "qrlogin_push_latency_seconds",
            "From a change's commit to its frame written to a waiting browser.",
            &[],
        );
        self.wechat_calls.render(
            out,
            "qrlogin_wechat_calls_total",
            "WeChat API calls (each try), by endpoint and outcome.",
            &["endpoint", "outcome"],
        );
        self.wechat_latency.render(
            out,
            "qrlogin_wechat_call_seconds",
            "WeChat API call latency (each try), by endpoint.",
            &["endpoint"],
        );
        self.store_latency.render(
            out,
            "qrlogin_store_call_seconds",
            "Redis call latency by operation (the memory store is not timed).",
            &["op"],
        );
        self.limits_hit.render(
            out,
            "qrlogin_limits_hit_total",
            "Requests refused by a limit or cap, by the setting that refused them.",
            &["limit"],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let h = Histogram::default();
        h.observe(&[], Duration::from_micros(700));
        h.observe(&[], Duration::from_millis(30));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "x", &[]);
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 0"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 1"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.05\"} 2"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2"), "{out}");
        assert!(out.contains("x_seconds_count 2"), "{out}");
        let l = Labelled::default();
        l.inc(&["a\"b", "ok"]);
        let mut out = String::new();
        l.render(&mut out, "y_total", "y", &["connection", "outcome"]);
        assert!(
            out.contains("y_total{connection=\"a\\\"b\",outcome=\"ok\"} 1"),
            "{out}"
        );
    }
}
