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
    pub latencies: Latencies,
    /// (cycle, RSS KiB) after rounds: the peak of each span of rounds it keeps.
    pub rss: Series<u64>,
    pub rss_warm_kib: Option<u64>,
    pub rss_peak_kib: u64,
    pub rss_final_kib: Option<u64>,
    /// Outcome counts per span of rounds, for the plot of the mix over time.
    pub outcome_rounds: Series<BTreeMap<String, u64>>,
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

/// Call latencies as a histogram of fixed log buckets, so a run of any length holds the same
/// few hundred counters (a sample per call, kept for ever, grew RSS with the run's length).
/// A percentile is its bucket's upper edge: within 1/[`Latencies::PER_DECADE`] of a decade.
pub struct Latencies {
    counts: Vec<u64>,
    total: u64,
    max_ms: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; Self::BUCKETS],
            total: 0,
            max_ms: 0.0,
        }
    }
}

impl Latencies {
    pub const PER_DECADE: usize = 20;
    /// The lower edge of bucket 0; anything below it counts there.
    pub const FLOOR_MS: f64 = 0.01;
    /// 0.01 ms to 1000 s; anything above counts in the last.
    pub const BUCKETS: usize = 7 * Self::PER_DECADE;

    pub fn bucket(ms: f64) -> usize {
        let b =
            ((ms.max(Self::FLOOR_MS) / Self::FLOOR_MS).log10() * Self::PER_DECADE as f64).floor();
        (b.max(0.0) as usize).min(Self::BUCKETS - 1)
    }

    /// The upper edge of bucket `b`, in ms.
    pub fn upper_ms(b: usize) -> f64 {
        Self::FLOOR_MS * 10f64.powf((b + 1) as f64 / Self::PER_DECADE as f64)
    }

    pub fn record(&mut self, ms: f64) {
        self.counts[Self::bucket(ms)] += 1;
        self.total += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// (bucket, count), every bucket.
    pub fn buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts.iter().copied().enumerate()
    }

    pub fn percentile(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total - 1) as f64 * p).round() as u64;
        let mut seen = 0;
        for (b, n) in self.buckets() {
            seen += n;
            if seen > rank {
                return Self::upper_ms(b).min(self.max_ms);
            }
        }
        self.max_ms
    }
}

/// Per-round points held to at most [`Series::CAP`]: when full, each two neighbours merge into
/// one (the later cycle, the values merged), so the series always spans the whole run.
pub struct Series<T> {
    points: Vec<(u64, T)>,
    /// Rounds per point now (doubles at each merge).
    span: u64,
    /// Rounds gathered into the point being built.
    pending: u64,
    merge: fn(&mut T, T),
}

impl<T> Series<T> {
    pub const CAP: usize = 1024;

    pub fn new(merge: fn(&mut T, T)) -> Self {
        Series {
            points: Vec::new(),
            span: 1,
            pending: 0,
            merge,
        }
    }

    pub fn push(&mut self, cycle: u64, value: T) {
        if self.pending > 0
            && let Some(last) = self.points.last_mut()
        {
            (self.merge)(&mut last.1, value);
            last.0 = cycle;
        } else {
            if self.points.len() == Self::CAP {
                self.halve();
            }
            self.points.push((cycle, value));
        }
        self.pending = (self.pending + 1) % self.span;
    }

    fn halve(&mut self) {
        let merge = self.merge;
        let old = std::mem::take(&mut self.points);
        let mut it = old.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                merge(&mut a.1, b.1);
                a.0 = b.0;
            }
            self.points.push(a);
        }
        self.span *= 2;
    }

    pub fn points(&self) -> &[(u64, T)] {
        &self.points
    }
}

impl Series<u64> {
    /// At most about `n` points of a series of peaks: each is the last cycle of a span of
    /// points and the span's peak, so thinning never hides a spike.
    pub fn thinned(&self, n: usize) -> Vec<[u64; 2]> {
        self.points
            .chunks(self.points.len().div_ceil(n.max(1)).max(1))
            .map(|span| {
                let cycle = span.last().map_or(0, |p| p.0);
                [cycle, span.iter().map(|p| p.1).max().unwrap_or(0)]
            })
            .collect()
    }
}

impl Default for Series<u64> {
    /// A series of peaks.
    fn default() -> Self {
        Series::new(|a, b| *a = (*a).max(b))
    }
}

impl Default for Series<BTreeMap<String, u64>> {
    /// A series of counts.
    fn default() -> Self {
        Series::new(|a, b| {
            for (k, v) in b {
                *a.entry(k).or_default() += v;
            }
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Stats {
    /// `compiled`: every failpoint of the build (none without the feature); `armable`: those
    /// this run could arm (`--failpoint`).
    pub fn to_json(
        &self,
        header: Value,
        compiled: &[&str],
        armable: &[&str],
        rss_bound_kib: u64,
    ) -> Value {
        let lat = &self.latencies;
        let mut ends = self.exit_end_ms.clone();
        ends.sort_by(f64::total_cmp);
        let peak = self.rss_peak_kib;
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
                // Bucket upper edges (20 a decade), capped at the max.
                "p50": round3(lat.percentile(0.5)),
                "p99": round3(lat.percentile(0.99)),
                "max": round3(lat.max_ms),
            },
            "rss_kib": {
                "warm": self.rss_warm_kib,
                "peak": peak,
                "final": self.rss_final_kib,
                "bound": rss_bound_kib,
                "growth_after_warm": self.rss_warm_kib.map(|w| peak.saturating_sub(w)),
                // (cycle, peak KiB of the rounds since the previous point), at most 256.
                "samples": self.rss.thinned(256),
            },
            "generated": {
                "modules": self.generated_modules,
                "calls": self.generated_calls,
                // Each generated guest's memory bound: its domain's limit, and the most any of
                // its memories declares (which bounds what compiling it costs).
                "max_memory": super::generated::MAX_MEMORY,
                "differential": {
                    "compared": self.differential.compared,
                    "agreed": self.differential.agreed,
                    "inconclusive": self.differential.inconclusive,
                    "mismatched": self.differential.mismatches.len(),
                },
            },
            "failpoints": {
                "compiled": !compiled.is_empty(),
                "names": compiled,
                // Armed in some round and fired there: covered; `not_covered` lists the rest
                // of those the run could arm.
                "covered": self.failpoints.values().filter(|f| f.hits > 0).count(),
                "not_covered": armable
                    .iter()
                    .filter(|n| self.failpoints.get(**n).is_none_or(|f| f.hits == 0))
                    .collect::<Vec<_>>(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_their_buckets_within_a_twentieth_of_a_decade() {
        let mut l = Latencies::default();
        for i in 1..=1000 {
            l.record(i as f64 / 10.0); // 0.1 ms .. 100 ms, uniformly
        }
        let step = 10f64.powf(1.0 / Latencies::PER_DECADE as f64);
        for (p, exact) in [(0.5, 50.0), (0.99, 99.0)] {
            let got = l.percentile(p);
            assert!(
                got >= exact && got <= exact * step,
                "p{p}: {got} for {exact}"
            );
        }
        assert_eq!(l.percentile(1.0), 100.0, "capped at the max");
        assert_eq!(l.max_ms, 100.0);
        // Far outside the range: counted at the ends, not lost.
        l.record(0.0);
        l.record(1e9);
        assert_eq!(l.buckets().map(|b| b.1).sum::<u64>(), 1002);
        assert_eq!(Latencies::default().percentile(0.5), 0.0);
    }

    #[test]
    fn thinning_a_series_of_peaks_keeps_every_spike() {
        let mut s = Series::<u64>::default();
        for r in 1..=1000u64 {
            // One spike, at a round that plain every-n-th sampling skips.
            s.push(r, if r == 503 { 9_999 } else { 100 });
        }
        let thin = s.thinned(64);
        assert!(thin.len() <= 64, "{}", thin.len());
        assert_eq!(thin.iter().map(|p| p[1]).max(), Some(9_999), "{thin:?}");
        assert_eq!(thin.last().map(|p| p[0]), s.points().last().map(|p| p.0));
        assert!(Series::<u64>::default().thinned(64).is_empty());
    }

    #[test]
    fn a_series_stays_bounded_and_spans_the_whole_run() {
        let mut s = Series::<u64>::default();
        let rounds = 10 * Series::<u64>::CAP as u64 + 7;
        for r in 1..=rounds {
            s.push(r * 8, r);
        }
        let points = s.points();
        assert!(points.len() <= Series::<u64>::CAP, "{}", points.len());
        assert!(points.len() > Series::<u64>::CAP / 4, "{}", points.len());
        assert_eq!(
            points.last().unwrap(),
            &(rounds * 8, rounds),
            "the last round is kept"
        );
        // Peaks: each point is the max of its rounds, the latest of them.
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        );
        assert_eq!(points.iter().map(|p| p.1).max(), Some(rounds));

        let mut c = Series::<BTreeMap<String, u64>>::default();
        for r in 0..rounds {
            c.push(r, BTreeMap::from([("ok".to_string(), 2)]));
        }
        let total: u64 = c.points().iter().map(|p| p.1["ok"]).sum();
        assert_eq!(total, 2 * rounds, "counts merge without loss");
        assert!(c.points().len() <= Series::<u64>::CAP);
    }
}
