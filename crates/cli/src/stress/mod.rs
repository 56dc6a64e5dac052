//! `warden stress`: a seeded, replayable hostile mix run in-process against the public
//! `warden` API, with the invariants checked after every run.
//!
//! A **run** is one round of `--concurrency` cycles at once (see [`mix`]); when all of them
//! have ended, [`invariants`] checks what must then hold. Every choice comes from the seed and
//! the cycle's number, so `--seed S --from-cycle C --cycles N --concurrency N` replays a round
//! (timing is the machine's, so a race may need a few replays). Racing exits run in child
//! processes ([`exits`]); generated guests and the differential check are in [`generated`];
//! failpoints (feature `failpoints`) are armed per round, chosen by the seed.

mod exits;
mod generated;
mod invariants;
mod mix;
mod plots;
mod report;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::{Policy, Runtime, RuntimeConfig, exit_code};

use crate::input::read_bounded;
use crate::output::{err, escape, out};
use crate::size::parse_size;
use invariants::Ledger;
use mix::{Cycle, Fixtures, HandleCount, MixConfig, Rng};
use report::{FailpointStats, Stats, Violation};

/// Exit code of a stress run that found an invariant violated.
pub const VIOLATION: i32 = 1;

pub const STRESS_HELP: &str = "\
The mix: the bundled hostile guests (loop, recursion, memory hog, trap, a critical region and a
constrained region that never end, an orphaned lock, lock misuse, deadlocks, handle floods, a
finalizer that never returns, stalled I/O, long sleeps, WASI writes, calls to embedder
functions), wasm-smith modules, and your MODULEs
(each export whose parameters are numbers, given zeros), with random aborts, rude aborts,
unloads mid-call, dropped futures, deadlines and memory-gate reservations, over --concurrency
domains at once; racing exits in child processes every --exit-every cycles.

Invariants, after every round of --concurrency cycles: every call ended in exactly one outcome
and its call_finished agrees; every call_started has its call_finished; no domain, host lock,
reservation or host handle left; the budget back to 0; the bundled guests' outcomes are those
of the policy (built-in policy only); RSS within --rss-bound of its warm-up; exit children end
with a racer's code or the watchdog's, within the process-exit bound.
A violation prints the seed and a one-line command that replays its round.

Failpoints (a build with `--features failpoints`): budget-charge, handle-insert, lock-acquire,
store-create, instantiate, host-call-entry (Warden's imports), wasi-write and wasi-read (WASI
stdio, preview1 and preview2), embedder-entry (the embedder's host functions for core
modules), component-embedder-entry (its bindgen! functions for components: fails as a panic
there does, a trap of the call); armed for a round by the seed (transient: once or by
probability; persistent: every time), then disarmed.

Exit codes:
    0    every invariant held
    1    an invariant was violated (the report and stderr say which, with a replay command)
    2    bad command line
    3    bad input: unreadable or invalid module, a module with nothing to call, bad policy,
         nonsense seed, size or duration";

/// The built-in policy: `server` with every bound short, so hostile guests cost milliseconds.
pub const STRESS_POLICY: &str = r#"preset = "server"
[timeouts]
abort = { after = "100ms", action = "rude-abort" }
rude-abort = { after = "200ms", action = "rude-unload-domain" }
rude-abort-critical = { after = "200ms", action = "rude-unload-domain" }
unload-domain = { after = "5s", action = "rude-unload-domain" }
rude-unload-domain = { after = "5s", action = "exit-process" }
finalizer-run = { after = "50ms", action = "abort" }
process-exit = { after = "2s", action = "rude-exit-process" }
"#;

/// The environment variable that, set to 1, lets `--inject-leak-at` work (a self-test aid).
const SELF_TEST_ENV: &str = "WARDEN_STRESS_SELF_TEST";

#[derive(Args)]
pub struct StressArgs {
    /// Your guests (.wasm or .wat), mixed in with the bundled ones.
    modules: Vec<PathBuf>,
    /// The seed (decimal or 0x-hex). Default: from the clock, printed so the run can be replayed.
    #[arg(long)]
    seed: Option<String>,
    /// Stop after this long (e.g. 30s, 5m). Default 30s when --cycles is not given.
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// Stop after this many cycles (with --duration: whichever comes first).
    #[arg(long, value_name = "N")]
    cycles: Option<u64>,
    /// Start at this cycle (to replay a round printed by a violation).
    #[arg(long = "from-cycle", value_name = "N", default_value_t = 0)]
    from_cycle: u64,
    /// Cycles run at once (each in its own domains): a round.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: u64,
    /// Escalation policy: a preset (server, clr, sqlserver, fail-fast) or a TOML file.
    /// Default: `server` with short bounds (see `--show-policy`). Outcomes are checked against
    /// the built-in policy only; the other invariants hold under any.
    #[arg(long, value_name = "PRESET|FILE")]
    policy: Option<String>,
    /// Print the built-in policy and exit.
    #[arg(long = "show-policy")]
    show_policy: bool,
    /// Process-wide budget for guest memory: small, for memory pressure.
    #[arg(long = "memory-budget", value_name = "SIZE", default_value = "128MiB")]
    memory_budget: String,
    /// Linear memory each domain may hold.
    #[arg(long = "max-memory", value_name = "SIZE", default_value = "8MiB")]
    max_memory: String,
    /// The longest short deadline given to calls (each is drawn below it).
    #[arg(long, value_name = "DURATION", default_value = "200ms")]
    deadline: String,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write plots (rss, latency, outcomes; .svg and .png) into DIR.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Also run each generated module in bare wasmtime and check the outcome is the same kind.
    #[arg(long)]
    differential: bool,
    /// Leave generated (wasm-smith) modules out of the mix.
    #[arg(long = "no-generated")]
    no_generated: bool,
    /// Race exits in a child process every N cycles (0: never).
    #[arg(long = "exit-every", value_name = "N", default_value_t = 250)]
    exit_every: u64,
    /// Probability that a round arms a failpoint (builds with `--features failpoints`).
    #[arg(long = "failpoint-rate", value_name = "P", default_value_t = 0.3)]
    failpoint_rate: f64,
    /// Draw the bundled guests from this kind only (repeatable; e.g. loop, trap, wasi_io;
    /// default: every kind).
    #[arg(long = "kind", value_name = "KIND")]
    kind: Vec<String>,
    /// Arm only this failpoint (repeatable; default: any of them).
    #[arg(long = "failpoint", value_name = "NAME")]
    failpoint: Vec<String>,
    /// How far RSS may grow past its peak during warm-up.
    #[arg(long = "rss-bound", value_name = "SIZE", default_value = "64MiB")]
    rss_bound: String,
    /// Cycles of warm-up before RSS is held to its bound.
    #[arg(long = "warm-up", value_name = "N", default_value_t = 200)]
    warm_up: u64,
    /// Read MODULEs and a --policy file even when they are not regular files.
    #[arg(long = "allow-non-regular")]
    allow_non_regular: bool,
    /// Self-test: leak a memory-gate reservation in the round holding cycle N, to prove the
    /// invariants catch it. Works only with WARDEN_STRESS_SELF_TEST=1 in the environment.
    #[arg(long = "inject-leak-at", value_name = "N", hide = true)]
    inject_leak_at: Option<u64>,
}

#[derive(Args)]
pub struct ExitChildArgs {
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    policy: String,
}

pub fn exit_child(args: ExitChildArgs) -> i32 {
    match load_policy(Some(&args.policy), false) {
        Ok((policy, _)) => exits::child(args.seed, policy),
        Err(e) => {
            err(&format!("warden: {e}"));
            exit_code::BAD_INPUT
        }
    }
}

/// The policy and whether it is the built-in one.
fn load_policy(spec: Option<&str>, allow_non_regular: bool) -> Result<(Policy, bool), String> {
    match spec {
        None | Some("stress") => Policy::from_toml_str(STRESS_POLICY)
            .map(|p| (p, true))
            .map_err(|e| format!("the built-in stress policy: {e}")),
        Some(s) => Policy::load_with(s, allow_non_regular)
            .map(|p| (p, false))
            .map_err(|source| {
                crate::error::CliError::Policy {
                    source,
                    allowed: allow_non_regular,
                }
                .to_string()
            }),
    }
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    };
    parsed.map_err(|_| {
        format!(
            "--seed: `{s}` is not a number (decimal, or hex with 0x), at most {}",
            u64::MAX
        )
    })
}

/// What the run does, after the command line was checked.
struct Plan {
    seed: u64,
    from_cycle: u64,
    cycles: Option<u64>,
    duration: Duration,
    concurrency: u64,
    policy: Policy,
    policy_arg: String,
    memory_budget: u64,
    mix: MixConfig,
    user: Vec<(String, Vec<u8>)>,
    exit_every: u64,
    failpoint_rate: f64,
    /// The failpoints a round may arm.
    failpoints: Vec<&'static str>,
    rss_bound_kib: u64,
    warm_up: u64,
    inject_leak_at: Option<u64>,
    report: Option<PathBuf>,
    plots: Option<PathBuf>,
    /// The options that shape rounds, for replay commands.
    replay_args: String,
}

fn plan(args: StressArgs) -> Result<Plan, String> {
    let seed = match &args.seed {
        Some(s) => parse_seed(s)?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    let duration = |flag: &str, s: &str| match warden_policy::parse_duration(s) {
        Ok(Some(d)) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!(
            "{flag}: `{s}` must be a positive duration (e.g. 30s)"
        )),
        Err(e) => Err(format!("{flag}: {e}")),
    };
    let run_for = match (&args.duration, args.cycles) {
        (Some(d), _) => duration("--duration", d)?,
        (None, Some(_)) => Duration::from_secs(365 * 24 * 3600),
        (None, None) => Duration::from_secs(30),
    };
    if args.cycles == Some(0) {
        return Err("--cycles: must be at least 1".into());
    }
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        return Err(format!("--concurrency: must be 1 to {MAX_CONCURRENCY}"));
    }
    if !(0.0..=1.0).contains(&args.failpoint_rate) {
        return Err("--failpoint-rate: must be a probability, 0 to 1".into());
    }
    let mut kinds = Vec::new();
    for name in &args.kind {
        match mix::HOSTILE.iter().find(|h| h.name() == name.as_str()) {
            Some(h) if !kinds.contains(h) => kinds.push(*h),
            Some(_) => {}
            None => {
                return Err(format!(
                    "--kind: no kind `{}` (there are: {})",
                    escape(name, false),
                    mix::HOSTILE
                        .iter()
                        .map(|h| h.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    if kinds.is_empty() {
        kinds = mix::HOSTILE.to_vec();
    }
    let mut chosen = Vec::new();
    for name in &args.failpoint {
        if !failpoints::COMPILED {
            return Err(
                "--failpoint: this build has no failpoints (build with --features failpoints)"
                    .into(),
            );
        }
        match failpoints::NAMES.iter().find(|n| **n == name.as_str()) {
            Some(n) if !chosen.contains(n) => chosen.push(*n),
            Some(_) => {}
            None => {
                return Err(format!(
                    "--failpoint: no failpoint `{}` (there are: {})",
                    escape(name, false),
                    failpoints::NAMES.join(", ")
                ));
            }
        }
    }
    if chosen.is_empty() {
        chosen = failpoints::NAMES.to_vec();
    }
    let (policy, builtin_policy) = load_policy(args.policy.as_deref(), args.allow_non_regular)?;
    let size = |flag: &str, s: &str| parse_size(s).map_err(|e| format!("{flag}: {e}"));
    let memory_budget = size("--memory-budget", &args.memory_budget)?;
    let max_memory = size("--max-memory", &args.max_memory)?;
    let rss_bound = size("--rss-bound", &args.rss_bound)?;
    let deadline = duration("--deadline", &args.deadline)?;
    let inject_leak_at = match args.inject_leak_at {
        Some(_) if std::env::var(SELF_TEST_ENV).as_deref() != Ok("1") => {
            return Err(format!(
                "--inject-leak-at is a self-test aid: it needs {SELF_TEST_ENV}=1"
            ));
        }
        n => n,
    };
    let mut user = Vec::new();
    let limit = warden::EngineConfig::default().max_module_bytes as u64;
    for path in &args.modules {
        let bytes = read_bounded(path, limit, args.allow_non_regular).map_err(|e| e.to_string())?;
        user.push((path.display().to_string(), bytes));
    }
    let mut replay = Vec::new();
    if let Some(p) = &args.policy {
        replay.push(format!("--policy {}", shell(p)));
    }
    for (flag, value, default) in [
        ("--memory-budget", &args.memory_budget, "128MiB"),
        ("--max-memory", &args.max_memory, "8MiB"),
        ("--deadline", &args.deadline, "200ms"),
    ] {
        if value != default {
            replay.push(format!("{flag} {}", shell(value)));
        }
    }
    if args.differential {
        replay.push("--differential".into());
    }
    if args.no_generated {
        replay.push("--no-generated".into());
    }
    if args.failpoint_rate != 0.3 {
        replay.push(format!("--failpoint-rate {}", args.failpoint_rate));
    }
    for name in &args.kind {
        replay.push(format!("--kind {}", shell(name)));
    }
    for name in &args.failpoint {
        replay.push(format!("--failpoint {}", shell(name)));
    }
    if let Some(at) = inject_leak_at {
        replay.push(format!("--inject-leak-at {at}"));
    }
    for m in &args.modules {
        replay.push(shell(&m.display().to_string()));
    }
    Ok(Plan {
        seed,
        from_cycle: args.from_cycle,
        cycles: args.cycles,
        duration: run_for,
        concurrency: args.concurrency,
        policy,
        policy_arg: args.policy.clone().unwrap_or_else(|| "stress".into()),
        memory_budget,
        mix: MixConfig {
            deadline,
            max_memory,
            differential: args.differential,
            generated: !args.no_generated,
            check_expected: builtin_policy,
            kinds,
        },
        user,
        exit_every: args.exit_every,
        failpoint_rate: args.failpoint_rate,
        failpoints: chosen,
        rss_bound_kib: rss_bound / 1024,
        warm_up: args.warm_up,
        inject_leak_at,
        report: args.report.clone(),
        plots: args.plots.clone(),
        replay_args: replay.join(" "),
    })
}

fn shell(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn run(args: StressArgs) -> i32 {
    if args.show_policy {
        out(STRESS_POLICY.trim_end());
        return exit_code::SUCCESS;
    }
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => {
            err(&format!("warden stress: {}", escape(&e, true)));
            return exit_code::BAD_INPUT;
        }
    };
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(t) => t,
        Err(e) => {
            err(&format!(
                "warden stress: cannot start the async runtime: {e}"
            ));
            return exit_code::FATAL;
        }
    };
    tokio.block_on(stress(plan))
}

/// The most cycles a round runs at once: each is one or two live domains.
const MAX_CONCURRENCY: u64 = 1024;

/// A runtime for the run, with its exit function recording instead of exiting: a policy exit
/// action ends that runtime (it admits nothing more), and the run goes on with a new one.
fn runtime(plan: &Plan, ledger: &Ledger) -> Result<Runtime, String> {
    let defaults = warden::EngineConfig::default();
    let rt = Runtime::new(RuntimeConfig {
        engine: warden::EngineConfig {
            // A cycle holds up to two domains, a component several core instances: the pool
            // must not be what refuses them.
            pool_slots: defaults.pool_slots.max(4 * plan.concurrency as u32),
            ..defaults
        },
        host_functions: mix::host_functions(),
        policy: plan.policy.clone(),
        memory_budget: Some(plan.memory_budget),
        exit: Arc::new(|_code| {}),
        ..RuntimeConfig::default()
    })
    .map_err(|e| format!("cannot create the runtime: {e}"))?;
    ledger.subscribe(&rt);
    Ok(rt)
}

#[cfg(feature = "failpoints")]
mod failpoints {
    pub use warden::warden_core::failpoints::{NAMES, fail, hits};
    pub const COMPILED: bool = true;
}

#[cfg(not(feature = "failpoints"))]
mod failpoints {
    pub const NAMES: &[&str] = &[];
    pub const COMPILED: bool = false;
    pub fn hits() -> std::collections::BTreeMap<&'static str, u64> {
        Default::default()
    }
}

/// The failpoint armed for a round: name, and whether persistent.
struct Armed {
    name: &'static str,
    persistent: bool,
}

fn arm(rng: &mut Rng, rate: f64, names: &[&'static str]) -> Option<Armed> {
    if !failpoints::COMPILED || names.is_empty() || !rng.chance(rate) {
        return None;
    }
    let name = *rng.pick(names);
    let persistent = rng.chance(0.3);
    #[cfg(feature = "failpoints")]
    {
        let action = if persistent {
            "return"
        } else {
            *rng.pick(&["1*return", "3*return", "10%return"])
        };
        if let Err(e) = failpoints::fail::cfg(name, action) {
            err(&format!("warden stress: cannot arm failpoint {name}: {e}"));
            return None;
        }
    }
    Some(Armed { name, persistent })
}

fn disarm(armed: &Option<Armed>) {
    #[cfg(feature = "failpoints")]
    if let Some(a) = armed {
        failpoints::fail::remove(a.name);
    }
    let _ = armed;
}

async fn stress(plan: Plan) -> i32 {
    let ledger = Ledger::default();
    let mut rt = match runtime(&plan, &ledger) {
        Ok(rt) => rt,
        Err(e) => {
            err(&format!("warden stress: {e}"));
            return exit_code::FATAL;
        }
    };
    let mut fixtures = match Fixtures::load(&rt, &plan.user) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            err(&format!("warden stress: {}", escape(&e, true)));
            return exit_code::BAD_INPUT;
        }
    };
    let mix = Arc::new(plan.mix.clone());
    let handles = Arc::new(HandleCount::default());
    let mut stats = Stats::default();
    let started = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let bar = match plan.cycles {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new(plan.duration.as_secs().max(1)),
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let seed = plan.seed;
    let end = plan.cycles.map(|n| plan.from_cycle.saturating_add(n));
    let mut cycle = plan.from_cycle;
    let mut exit_race: Option<tokio::task::JoinHandle<exits::ExitRun>> = None;
    let mut next_exit = if plan.exit_every == 0 {
        u64::MAX
    } else {
        cycle.next_multiple_of(plan.exit_every)
    };
    let mut rss_warm: u64 = 0;
    let replay_base = format!("warden stress --seed {seed}");

    while end.is_none_or(|e| cycle < e) && started.elapsed() < plan.duration {
        let n = end.map_or(plan.concurrency, |e| (e - cycle).min(plan.concurrency));
        let mut round_rng = Rng::for_cycle(seed ^ 0x5157_0000_F417_0000, cycle);
        let armed = arm(&mut round_rng, plan.failpoint_rate, &plan.failpoints);
        let hits_before = failpoints::hits();
        let config = Arc::new(MixConfig {
            check_expected: mix.check_expected && armed.is_none(),
            ..mix.as_ref().clone()
        });
        let mut set = tokio::task::JoinSet::new();
        for c in cycle..cycle + n {
            let cyc = Cycle {
                rt: rt.clone(),
                fixtures: fixtures.clone(),
                config: config.clone(),
                handles: handles.clone(),
                rng: Rng::for_cycle(seed, c),
            };
            set.spawn(cyc.run());
        }
        if plan
            .inject_leak_at
            .is_some_and(|at| (cycle..cycle + n).contains(&at))
            && let Ok(r) = rt.memory_budget().reserve(4096)
        {
            std::mem::forget(r);
        }
        let mut problems = Vec::new();
        let mut ends = Vec::new();
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            let result = match joined {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("a cycle's task failed: {e}"));
                    continue;
                }
            };
            *stats.runs.entry(result.kind.clone()).or_default() += 1;
            let by_kind = stats.kinds.entry(result.kind.clone()).or_default();
            for call in &result.calls {
                let name = call.outcome.map_or("dropped", |o| o.as_str()).to_string();
                *by_kind.entry(name.clone()).or_default() += 1;
                *outcomes.entry(name).or_default() += 1;
                stats.calls += 1;
                stats.dropped_futures += call.outcome.is_none() as u64;
                stats.latencies.record(call.latency_ms);
            }
            if result.kind == "generated" {
                stats.generated_modules += 1;
            }
            stats.generated_calls += result.generated_calls;
            stats.failpoint_errors += result.failpoint_errors;
            if let Some(d) = result.differential {
                stats.differential.compared += d.compared;
                stats.differential.agreed += d.agreed;
                stats.differential.inconclusive += d.inconclusive;
                problems.extend(d.mismatches.iter().cloned());
                stats.differential.mismatches.extend(d.mismatches);
            }
            problems.extend(result.violations);
            ends.extend(result.calls);
        }
        disarm(&armed);
        let grace = Duration::from_secs(2);
        problems.extend(ledger.settle(&ends, grace).await);
        problems.extend(invariants::quiescent(&rt, &handles, grace).await);
        cycle += n;
        stats.cycles += n;
        stats.rounds += 1;
        let rss = invariants::rss_kib();
        stats.rss.push(stats.cycles, rss);
        stats.rss_peak_kib = stats.rss_peak_kib.max(rss);
        stats.rss_final_kib = Some(rss);
        stats.outcome_rounds.push(stats.cycles, outcomes);
        if stats.cycles <= plan.warm_up {
            rss_warm = rss_warm.max(rss);
        } else {
            let warm = *stats.rss_warm_kib.get_or_insert(rss_warm.max(rss));
            if rss > warm + plan.rss_bound_kib {
                problems.push(format!(
                    "RSS {rss} KiB, more than {} KiB past its warm-up peak of {warm} KiB",
                    plan.rss_bound_kib
                ));
            }
        }
        if let Some(a) = &armed {
            let fired = failpoints::hits().get(a.name).copied().unwrap_or(0)
                - hits_before.get(a.name).copied().unwrap_or(0);
            let f = stats
                .failpoints
                .entry(a.name.to_string())
                .or_insert_with(FailpointStats::default);
            if a.persistent {
                f.persistent_rounds += 1;
            } else {
                f.transient_rounds += 1;
            }
            f.hits += fired;
            if fired > 0 && problems.is_empty() {
                f.survived_rounds += 1;
            }
        }
        if !problems.is_empty() {
            let first = cycle - n;
            let mut replay = format!(
                "{replay_base} --from-cycle {first} --cycles {n} --concurrency {} --exit-every 0",
                plan.concurrency
            );
            if !plan.replay_args.is_empty() {
                replay = format!("{replay} {}", plan.replay_args);
            }
            let armed_note = armed.as_ref().map_or(String::new(), |a| {
                format!(
                    " (failpoint {} armed{})",
                    a.name,
                    if a.persistent { ", persistent" } else { "" }
                )
            });
            for what in problems {
                bar.suspend(|| {
                    err(&format!(
                        "warden stress: invariant violated in cycles {first}..{cycle} (seed {seed}){armed_note}: {}\n  replay: {replay}",
                        escape(&what, false)
                    ))
                });
                stats.violations.push(Violation {
                    round: stats.rounds - 1,
                    first_cycle: first,
                    what,
                    replay: replay.clone(),
                });
            }
            // One broken round makes every later check about the same leak: stop here.
            break;
        }
        if rt.is_exiting() || rt.is_disabled() {
            // The policy ended this runtime (an exit or disable action): go on with a new one.
            stats.runtime_restarts += 1;
            match runtime(&plan, &ledger)
                .and_then(|r| Fixtures::load(&r, &plan.user).map(|f| (r, f)))
            {
                Ok((r, f)) => {
                    rt = r;
                    fixtures = Arc::new(f);
                }
                Err(e) => {
                    err(&format!("warden stress: {e}"));
                    return exit_code::FATAL;
                }
            }
        }
        if cycle > next_exit {
            if exit_race.as_ref().is_none_or(|t| t.is_finished()) {
                if let Some(t) = exit_race.take() {
                    record_exit(&mut stats, t.await, seed, next_exit);
                }
                let race_seed = Rng::for_cycle(seed ^ 0xE417, next_exit).next();
                let (policy_arg, policy) = (plan.policy_arg.clone(), plan.policy.clone());
                exit_race = Some(tokio::spawn(async move {
                    exits::race(race_seed, &policy_arg, &policy).await
                }));
            }
            next_exit = cycle.next_multiple_of(plan.exit_every);
        }
        match plan.cycles {
            Some(_) => bar.set_position(stats.cycles),
            None => bar.set_position(started.elapsed().as_secs()),
        }
        bar.set_message(format!("{} calls", stats.calls));
    }
    if let Some(t) = exit_race.take() {
        record_exit(&mut stats, t.await, seed, next_exit);
    }
    bar.finish_and_clear();
    let header = serde_json::json!({
        "seed": seed,
        "from_cycle": plan.from_cycle,
        "concurrency": plan.concurrency,
        "policy": plan.policy_arg,
        "memory_budget": plan.memory_budget,
        "max_memory": mix.max_memory,
        "elapsed_s": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "replay": format!("{replay_base} --from-cycle {} --cycles {} --concurrency {}{}{}",
            plan.from_cycle, stats.cycles, plan.concurrency,
            if plan.replay_args.is_empty() { "" } else { " " }, plan.replay_args),
    });
    let report = stats.to_json(
        header,
        failpoints::NAMES,
        if failpoints::COMPILED {
            plan.failpoints.as_slice()
        } else {
            &[]
        },
        plan.rss_bound_kib,
    );
    let mut code = if stats.violations.is_empty() {
        exit_code::SUCCESS
    } else {
        VIOLATION
    };
    if let Some(path) = &plan.report {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            err(&format!(
                "warden stress: cannot write the report to {}: {e}",
                path.display()
            ));
            code = code.max(exit_code::BAD_INPUT);
        }
    }
    if let Some(dir) = &plan.plots
        && let Err(e) = plots::write(dir, &stats)
    {
        err(&format!(
            "warden stress: cannot write the plots to {}: {e}",
            dir.display()
        ));
        code = code.max(exit_code::BAD_INPUT);
    }
    out(&summary(&stats, seed, started.elapsed()));
    code
}

fn record_exit(
    stats: &mut Stats,
    joined: Result<exits::ExitRun, tokio::task::JoinError>,
    seed: u64,
    at: u64,
) {
    let run = match joined {
        Ok(r) => r,
        Err(e) => exits::ExitRun {
            code: None,
            end_ms: 0.0,
            problem: Some(format!("the exit race's task failed: {e}")),
        },
    };
    if let Some(c) = run.code {
        *stats.exit_codes.entry(c).or_default() += 1;
    } else {
        stats.process_deaths += 1;
    }
    stats.exit_end_ms.push(run.end_ms);
    if let Some(what) = run.problem {
        let replay = format!(
            "warden stress --seed {seed} --from-cycle {at} --cycles 1 --concurrency 1 --exit-every 1"
        );
        err(&format!(
            "warden stress: invariant violated in an exit race at cycle {at} (seed {seed}): {}\n  replay: {replay}",
            escape(&what, false)
        ));
        stats.violations.push(Violation {
            round: stats.rounds,
            first_cycle: at,
            what,
            replay,
        });
    }
}

fn summary(stats: &Stats, seed: u64, elapsed: Duration) -> String {
    let hostile: u64 = stats
        .runs
        .iter()
        .filter(|(k, _)| *k != "generated" && !k.starts_with("user"))
        .map(|(_, n)| n)
        .sum();
    let fired: u64 = stats.failpoints.values().map(|f| f.hits).sum();
    let verdict = if stats.violations.is_empty() {
        "every invariant held".to_string()
    } else {
        format!("{} invariant violations", stats.violations.len())
    };
    format!(
        "warden stress: seed {seed}: {} cycles in {:.1}s, {} calls ({hostile} hostile runs, {} generated modules), {} exit races, {} failpoint hits, peak RSS {} KiB: {verdict}",
        stats.cycles,
        elapsed.as_secs_f64(),
        stats.calls,
        stats.generated_modules,
        stats.exit_end_ms.len(),
        fired,
        stats.rss_peak_kib,
    )
}
