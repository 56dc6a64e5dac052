//! The server's Prometheus metrics (`/metrics`, OpenMetrics text via `prometheus-client`).
//!
//! Counters move as things happen: requests by app and outcome, latency by app, escalations
//! (from the runtime's `escalation` events), abort requests and rejected precompiled artifacts. Gauges that mirror state —
//! live domains, memory, queue depth, in flight, quarantined apps — are read when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;
use warden::{Event, EventKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EscalationLabels {
    /// The failure or the operation decided (one of the two is empty).
    failure: String,
    operation: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AbortLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type LatencyFamily = Family<AppLabels, Histogram, fn() -> Histogram>;

/// What the server reports at a scrape, besides its counters.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Domains alive (loaded or unloading).
    pub live_domains: usize,
    /// Guest memory in use, reserved through the gate, and the budget.
    pub memory_used: u64,
    /// Bytes reserved through the memory gate.
    pub memory_reserved: u64,
    /// The process budget.
    pub memory_budget: u64,
    /// Requests waiting for admission.
    pub queue_depth: usize,
    /// Requests holding an admission place.
    pub in_flight: usize,
    /// Each app and whether it is quarantined.
    pub quarantined: Vec<(String, bool)>,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    escalations: Family<EscalationLabels, Counter>,
    aborts: Family<AbortLabels, Counter>,
    artifacts_rejected: Family<ReasonLabels, Counter>,
    live_domains: Gauge,
    memory_used: Gauge,
    memory_reserved: Gauge,
    memory_budget: Gauge,
    queue_depth: Gauge,
    in_flight: Gauge,
    quarantined: Family<AppLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("warden");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by app and outcome (ok, timeout, trap, admission, quarantined, ...)",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from admission to the response head, by app",
            latency.clone(),
        );
        let escalations = Family::<EscalationLabels, Counter>::default();
        registry.register(
            "escalations",
            "Policy decisions, by failure or operation and the action taken",
            escalations.clone(),
        );
        let aborts = Family::<AbortLabels, Counter>::default();
        registry.register(
            "aborts",
            "Abort requests, by kind (polite, rude) and reason (deadline, embedder, unload, policy)",
            aborts.clone(),
        );
        let artifacts_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "artifacts_rejected",
            "Precompiled artifacts that failed their integrity check and were recompiled, by \
             reason (stale, corrupt)",
            artifacts_rejected.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let live_domains = gauge(&mut registry, "live_domains", "Domains alive now");
        let memory_used = gauge(&mut registry, "memory_used_bytes", "Guest memory in use");
        let memory_reserved = gauge(
            &mut registry,
            "memory_reserved_bytes",
            "Memory reserved through the memory gate",
        );
        let memory_budget = gauge(
            &mut registry,
            "memory_budget_bytes",
            "The process-wide guest memory budget",
        );
        let queue_depth = gauge(
            &mut registry,
            "queue_depth",
            "Requests waiting for admission",
        );
        let in_flight = gauge(
            &mut registry,
            "in_flight",
            "Requests admitted and not yet ended",
        );
        let quarantined = Family::<AppLabels, Gauge>::default();
        registry.register(
            "app_quarantined",
            "1 while the app is quarantined",
            quarantined.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            escalations,
            aborts,
            artifacts_rejected,
            live_domains,
            memory_used,
            memory_reserved,
            memory_budget,
            queue_depth,
            in_flight,
            quarantined,
        }
    }

    /// Counts one answered request (`app` is empty when no route matched).
    pub fn request(&self, app: &str, outcome: &str, latency: Option<Duration>) {
        self.requests
            .get_or_create(&RequestLabels {
                app: app.into(),
                outcome: outcome.into(),
            })
            .inc();
        if let Some(l) = latency {
            self.latency
                .get_or_create(&AppLabels { app: app.into() })
                .observe(l.as_secs_f64());
        }
    }

    /// Counts what an event says (escalations, abort requests).
    pub fn event(&self, event: &Event) {
        match &event.kind {
            EventKind::Escalation {
                failure,
                operation,
                action,
                ..
            } => {
                self.escalations
                    .get_or_create(&EscalationLabels {
                        failure: failure.clone().unwrap_or_default(),
                        operation: operation.clone().unwrap_or_default(),
                        action: action.clone(),
                    })
                    .inc();
            }
            EventKind::AbortRequested { kind, reason } => {
                self.aborts
                    .get_or_create(&AbortLabels {
                        kind: (*kind).into(),
                        reason: (*reason).into(),
                    })
                    .inc();
            }
            EventKind::ArtifactRejected { reason, .. } => {
                self.artifacts_rejected
                    .get_or_create(&ReasonLabels {
                        reason: (*reason).into(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// The metrics as OpenMetrics text, with the gauges set from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        let set = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.live_domains, now.live_domains as u64);
        set(&self.memory_used, now.memory_used);
        set(&self.memory_reserved, now.memory_reserved);
        set(&self.memory_budget, now.memory_budget);
        set(&self.queue_depth, now.queue_depth as u64);
        set(&self.in_flight, now.in_flight as u64);
        for (app, q) in now.quarantined {
            self.quarantined
                .get_or_create(&AppLabels { app })
                .set(i64::from(q));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_appear_in_the_text() {
        let m = Metrics::new();
        m.request("hello", "ok", Some(Duration::from_millis(3)));
        m.request("hello", "ok", Some(Duration::from_millis(3)));
        m.request("hello", "timeout", Some(Duration::from_secs(1)));
        let text = m.encode(Snapshot {
            live_domains: 2,
            memory_budget: 1 << 20,
            quarantined: vec![("hello".into(), true)],
            ..Snapshot::default()
        });
        assert!(
            text.contains(r#"warden_requests_total{app="hello",outcome="ok"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"warden_requests_total{app="hello",outcome="timeout"} 1"#));
        assert!(text.contains(r#"warden_request_duration_seconds_count{app="hello"} 3"#));
        assert!(text.contains("warden_live_domains 2"));
        assert!(text.contains("warden_memory_budget_bytes 1048576"));
        assert!(text.contains(r#"warden_app_quarantined{app="hello"} 1"#));
    }
}
