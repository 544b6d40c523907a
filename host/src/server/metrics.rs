//! `GET /metrics`: Prometheus text format, through the `prometheus-client` crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
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
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histogram,
    plugin_errors: Family<CauseLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
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
            decisions,
            decision_seconds,
            plugin_errors,
            logins,
        }
    }
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn request(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.into(),
                method: method.into(),
                status,
            })
            .inc();
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

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
