//! `GET /metrics`: OpenMetrics 1.0 through the `prometheus-client` crate, or the Prometheus
//! text format 0.0.4 for scrapers that do not ask for OpenMetrics (`Accept`).
//!
//! Every label takes its values from a bounded set: routes are the router's templates (or
//! `unmatched`), methods the standard ones (or `other`), so no client can make new series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    wit_world: &'static str,
}

/// The method as a label: one of the standard methods, or `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// Which exposition format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, otherwise the classic text format, which
    /// every scraper and `promtool check metrics` read.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut params = part.split(';').map(str::trim);
                let is_om = params.next() == Some("application/openmetrics-text");
                let refused = params.any(|p| p.replace(' ', "") == "q=0");
                is_om && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    front_door: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histogram,
    plugin_errors: Family<CauseLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
    /// Only on a replica (PostgreSQL): where it is in the change feed.
    replica: Option<ReplicaGauges>,
}

/// A replica's position in the change feed, set from its status when scraped.
struct ReplicaGauges {
    applied: Gauge,
    lag_changes: Gauge,
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    lease_valid: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("billstack");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by matched route, method and status",
            requests.clone(),
        );
        // 50 µs to ~13 s in powers of two.
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(5e-5, 2.0, 19))) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            request_seconds.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The running build: its version and the policy WIT world it hosts (always 1)",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                wit_world: env!("BILLSTACK_WIT_WORLD"),
            })
            .set(1);
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions by front door and outcome (allow or the deny code)",
            decisions.clone(),
        );
        // 1 µs to ~4 s in powers of two: microsecond resolution where decisions live.
        let decision_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 22));
        registry.register(
            "decision_duration_seconds",
            "Time to decide one request, including the plugin",
            decision_seconds.clone(),
        );
        let plugin_errors = Family::<CauseLabels, Counter>::default();
        registry.register(
            "plugin_errors",
            "Policy plugin failures (all failed closed) by cause",
            plugin_errors.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "logins",
            "Dashboard sign-in attempts by outcome",
            logins.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            decisions,
            decision_seconds,
            plugin_errors,
            logins,
            replica: None,
        }
    }
}

impl Metrics {
    /// The metrics of a replica following a change feed: the default ones plus its position.
    pub fn for_replica() -> Metrics {
        let mut metrics = Metrics::default();
        let gauges = ReplicaGauges {
            applied: Gauge::default(),
            lag_changes: Gauge::default(),
            lag_seconds: Gauge::default(),
            lease_valid: Gauge::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "replica_applied_sequence",
            "The last change-feed position this replica has applied to its caches",
            gauges.applied.clone(),
        );
        r.register(
            "replica_lag_changes",
            "Changes committed (as of the last poll) that this replica has not applied",
            gauges.lag_changes.clone(),
        );
        r.register(
            "replica_lag_seconds",
            "How long ago this replica's last complete poll of the change feed began: how stale its cache may be",
            gauges.lag_seconds.clone(),
        );
        r.register(
            "replica_lease_valid",
            "1 while this replica may decide from its cache (its lease holds), else 0",
            gauges.lease_valid.clone(),
        );
        metrics.replica = Some(gauges);
        metrics
    }

    /// Sets the replica gauges from `status` (before a scrape).
    pub fn replica_status(&self, status: &billstack_keystore::pg::ReplicaStatus) {
        let Some(g) = &self.replica else {
            return;
        };
        g.applied.set(status.applied_seq);
        g.lag_changes
            .set(status.head_seq.saturating_sub(status.applied_seq).max(0));
        g.lag_seconds.set(
            status
                .confirmed_ms_ago
                .map_or(f64::INFINITY, |ms| ms as f64 / 1000.0),
        );
        g.lease_valid.set(i64::from(status.lease_valid));
    }
}

impl Metrics {
    /// Counts one HTTP request and how long it took. `route` must be a route template (or
    /// `unmatched`); the method is bounded here.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.into(),
                method,
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.into(),
                method,
            })
            .observe(seconds);
    }

    /// Counts one decision and its latency.
    pub fn decision(&self, front_door: &str, outcome: &str, seconds: f64) {
        self.decisions
            .get_or_create(&DecisionLabels {
                front_door: front_door.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.decision_seconds.observe(seconds);
    }

    /// Counts a plugin failure.
    pub fn plugin_error(&self, cause: &str) {
        self.plugin_errors
            .get_or_create(&CauseLabels {
                cause: cause.into(),
            })
            .inc();
    }

    /// Counts a login attempt.
    pub fn login(&self, outcome: &str) {
        self.logins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The exposition in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        match format {
            Format::OpenMetrics => out,
            Format::Text => openmetrics_to_text(&out),
        }
    }
}

/// OpenMetrics as the Prometheus text format 0.0.4: a counter family is named after its
/// `_total` samples, `# UNIT` and `# EOF` go, and types 0.0.4 lacks become `untyped`.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if counters.contains(name) {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            let tail = if *prefix == "# TYPE " {
                match tail {
                    "counter" | "gauge" | "histogram" | "summary" => tail,
                    _ => "untyped",
                }
            } else {
                tail
            };
            Some(format!("{prefix}{name} {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => {
                // Counters' `_created` samples have no place in 0.0.4.
                let sample = line.split(['{', ' ']).next().unwrap_or_default();
                if sample.ends_with("_created")
                    && counters.contains(sample.trim_end_matches("_created"))
                {
                    continue;
                }
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        let m = Metrics::default();
        for method in ["GET", "FOO", "BAR", "get", "X-EVIL"] {
            m.request("/healthz", method, 200, 0.001);
        }
        let text = m.render(Format::Text);
        assert!(text.contains("method=\"GET\""), "{text}");
        assert!(text.contains("method=\"other\""), "{text}");
        for made_up in ["FOO", "BAR", "X-EVIL", "\"get\""] {
            assert!(!text.contains(made_up), "{made_up}: {text}");
        }
    }

    #[test]
    fn the_text_format_names_counters_by_their_samples_and_has_no_eof() {
        let m = Metrics::default();
        m.request("/healthz", "GET", 200, 0.001);
        m.login("success");
        let text = m.render(Format::Text);
        assert!(
            text.contains("# TYPE billstack_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP billstack_http_requests_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE billstack_http_request_duration_seconds histogram"));
        assert!(text.contains("billstack_build_info{version=\""), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        // Every family has its HELP and TYPE, once each.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps, "{text}");
        let om = m.render(Format::OpenMetrics);
        assert!(om.trim_end().ends_with("# EOF"), "{om}");
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Text
        );
    }
}
