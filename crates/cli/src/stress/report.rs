//! What a stress run found: counts by kind and outcome, latencies, RSS, failpoints, exits,
//! differential results and the invariant violations, as the JSON report.

use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::generated::Differential;

/// One invariant violation, with the command that replays its run.
pub struct Violation {
    pub round: u64,
    pub first_cycle: u64,
    pub what: String,
    pub replay: String,
}

#[derive(Default)]
pub struct FailpointStats {
    pub transient_rounds: u64,
    pub persistent_rounds: u64,
    pub hits: u64,
    /// Rounds in which it fired and every invariant still held.
    pub survived_rounds: u64,
}

#[derive(Default)]
pub struct Stats {
    pub cycles: u64,
    pub rounds: u64,
    pub calls: u64,
    pub dropped_futures: u64,
    /// kind -> outcome -> count (`dropped` for a future dropped before it ended).
    pub kinds: BTreeMap<String, BTreeMap<String, u64>>,
    pub runs: BTreeMap<String, u64>,
    pub latencies_ms: Vec<f64>,
    /// (cycle, RSS KiB) after each round.
    pub rss: Vec<(u64, u64)>,
    pub rss_warm_kib: Option<u64>,
    /// Outcome counts per round, for the plot of the mix over time.
    pub outcome_rounds: Vec<(u64, BTreeMap<String, u64>)>,
    pub generated_modules: u64,
    pub generated_calls: u64,
    pub differential: Differential,
    pub failpoints: BTreeMap<String, FailpointStats>,
    pub failpoint_errors: u64,
    pub exit_codes: BTreeMap<i32, u64>,
    pub exit_end_ms: Vec<f64>,
    pub process_deaths: u64,
    pub runtime_restarts: u64,
    pub violations: Vec<Violation>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Stats {
    pub fn to_json(&self, header: Value, failpoints_compiled: bool, rss_bound_kib: u64) -> Value {
        let mut lat = self.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        let mut ends = self.exit_end_ms.clone();
        ends.sort_by(f64::total_cmp);
        let peak = self.rss.iter().map(|r| r.1).max().unwrap_or(0);
        let kinds: BTreeMap<_, _> = self
            .kinds
            .iter()
            .map(|(k, o)| {
                (
                    k.clone(),
                    json!({"runs": self.runs.get(k).copied().unwrap_or(0), "outcomes": o}),
                )
            })
            .collect();
        let failpoints: BTreeMap<_, _> = self
            .failpoints
            .iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    json!({
                        "transient_rounds": f.transient_rounds,
                        "persistent_rounds": f.persistent_rounds,
                        "hits": f.hits,
                        "survived_rounds": f.survived_rounds,
                    }),
                )
            })
            .collect();
        json!({
            "run": header,
            "cycles": self.cycles,
            "rounds": self.rounds,
            "calls": self.calls,
            "dropped_futures": self.dropped_futures,
            "kinds": kinds,
            "latency_ms": {
                "p50": round3(percentile(&lat, 0.5)),
                "p99": round3(percentile(&lat, 0.99)),
                "max": round3(lat.last().copied().unwrap_or(0.0)),
            },
            "rss_kib": {
                "warm": self.rss_warm_kib,
                "peak": peak,
                "final": self.rss.last().map(|r| r.1),
                "bound": rss_bound_kib,
                "growth_after_warm": self.rss_warm_kib.map(|w| peak.saturating_sub(w)),
                // (cycle, KiB), at most about 200 points of the run.
                "samples": self
                    .rss
                    .iter()
                    .step_by(self.rss.len().div_ceil(200).max(1))
                    .map(|&(c, kib)| [c, kib])
                    .collect::<Vec<_>>(),
            },
            "generated": {
                "modules": self.generated_modules,
                "calls": self.generated_calls,
                "differential": {
                    "compared": self.differential.compared,
                    "agreed": self.differential.agreed,
                    "inconclusive": self.differential.inconclusive,
                    "mismatched": self.differential.mismatches.len(),
                },
            },
            "failpoints": {
                "compiled": failpoints_compiled,
                "injected_errors_seen": self.failpoint_errors,
                "points": failpoints,
            },
            "exits": {
                "runs": self.exit_end_ms.len(),
                "codes": self.exit_codes.iter().map(|(c, n)| (c.to_string(), *n)).collect::<BTreeMap<_, _>>(),
                "end_ms": {
                    "p50": round3(percentile(&ends, 0.5)),
                    "max": round3(ends.last().copied().unwrap_or(0.0)),
                },
                "process_deaths": self.process_deaths,
            },
            "runtime_restarts": self.runtime_restarts,
            "invariants": {
                "ok": self.violations.is_empty(),
                "checked_rounds": self.rounds,
                "violations": self.violations.iter().map(|v| json!({
                    "round": v.round,
                    "first_cycle": v.first_cycle,
                    "what": v.what,
                    "replay": v.replay,
                })).collect::<Vec<_>>(),
            },
        })
    }
}
