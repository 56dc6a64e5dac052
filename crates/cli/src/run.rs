//! `warden run`: each call in a fresh domain, one outcome each, a stable exit code.
//!
//! How a run ends: when the foreground calls are done, their domains are unloaded politely
//! (each guest's `warden_on_unload` runs, bounded by policy) and their results printed; then
//! the run takes the runtime's orderly exit path ([`Runtime::exit`]) with the run's code: stop
//! admitting, exit hooks, the finalizers of domains still loaded (background ones that are
//! idle; busy ones skip theirs), critical release, exit — all bounded by the policy's
//! `process-exit` timeout. Background calls still running are not waited for. A first
//! SIGTERM/SIGINT takes the same exit path at once, with code 117, without waiting for the
//! foreground calls; a second signal ends the process at once with 118. A policy exit action
//! goes through the same coordinator with its own code (114-116).

use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use warden::{
    CallError, CallOptions, CallOutput, Domain, DomainConfig, Module, Preopen, Runtime,
    RuntimeConfig, WasiConfig, exit_code,
};
use warden_policy::Policy;

use crate::error::CliError;
use crate::input::read_bounded;
use crate::invoke::{Invocation, command_failed, render};
use crate::output::{err, escape, flush, out};
use crate::size::parse_size;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
    0    every call succeeded
    N    a WASI command's own proc_exit code, passed through (a start function's too);
         0-125 (a larger one traps: 103), so a guest can choose one of the codes below;
         for a preview2 command, 1 when it exits with an error status (wasi:cli/exit) or
         its wasi:cli/run returns an error, as wasmtime's CLI does
    2    bad command line
    3    bad input: unreadable, non-regular, oversized or invalid module, too many functions
         or too long to compile, missing or unfit export, bad WAVE arguments (syntax,
         arity, types), unknown or wrongly typed import
         (an unknown WASI function too), minimum memory or tables past the domain's limits,
         invalid or unreadable policy, nonsense size or duration, a --dir or --dir-ro
         that is not a readable directory or not spelled HOST[::GUEST] (or given under a
         --grant without filesystem), an --env without a name, an unknown --grant category
  103    trap                     104  stack overflow
  105    out of memory            106  timeout (deadline)
  107    aborted (*)              108  rudely aborted (*)
  109    deadlock victim (when the policy's deadlock action ends the call)
  110    domain unloaded (*)
  111    insufficient memory: refused before any guest code ran (memory gate, a domain's
         initial memory, a full instance pool)
  112    process exiting (*)      113  runtime disabled (*)
  114    policy chose exit-process
  115    policy chose fast-exit-process
  116    policy chose rude-exit-process, or the shutdown watchdog ended the exit
  117    first SIGTERM/SIGINT     118  second signal (rude exit)
  119    Warden's own invariant broke (fail-fast; a report goes to stderr)
  120    not permitted: the module imports what --grant forbids (each such import is
         named with its category; refused before any guest code ran)
(*) call outcomes of the embedding API; `warden run` does not end with them.
A start function is a call like any other: its failure has its outcome's code.
When several calls fail, the code is that of the first failing --invoke in command-line order.
Background calls (--background-invoke) never decide the code.";

#[derive(Args)]
pub struct RunArgs {
    /// The guest: a core module or a component, as a .wasm binary or .wat text.
    module: PathBuf,
    /// Call this export instead of the command (`_start`, or a component's `wasi:cli/run`):
    /// `NAME`, or `NAME(ARGS)` with arguments in WAVE, e.g. --invoke 'add(1, 2)',
    /// --invoke 'greet("you")', --invoke 'area({w: 2, h: 3})'. A component's export may be
    /// named by its path (`pkg:iface/func`, `wasi:cli/run@0.2.0#run`) or by its own name
    /// when only one function has it. Results are printed as `NAME: RESULT`, the result in
    /// WAVE. Repeat to run several concurrently, each in its own domain.
    #[arg(long = "invoke", value_name = "NAME[(ARGS)]")]
    invoke: Vec<String>,
    /// Also call this export (NAME or NAME(ARGS), as --invoke) as a background call, in its own domain, started
    /// once alongside the others (repeatable). Background calls do not keep the run alive:
    /// when the foreground calls (--invoke, or `_start`) are done, the run exits without
    /// waiting for them. A background call that finished prints its result like the others,
    /// but never decides the exit code; its domain stays loaded until the exit, whose
    /// finalizer phase runs its `warden_on_unload` if it is idle by then.
    #[arg(long = "background-invoke", value_name = "NAME[(ARGS)]")]
    background_invoke: Vec<String>,
    /// Bound each call: passing it is a `deadline` failure (e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION")]
    deadline: Option<String>,
    /// Linear memory each domain may hold (e.g. 8MiB).
    #[arg(long = "max-memory", value_name = "SIZE")]
    max_memory: Option<String>,
    /// Process-wide budget for guest memory (e.g. 256MiB). Default: what the machine can give
    /// (the cgroup limit, else physical memory less a margin).
    #[arg(long = "memory-budget", value_name = "SIZE")]
    memory_budget: Option<String>,
    /// What the guest may import: a preset (safe: clocks and random; external: plus stdio,
    /// file system (--dir), network, environment; unsafe: plus host locks, sleeps and waits,
    /// handles) or a comma list of presets and categories, e.g. `safe,stdio,synchronization`.
    /// Categories: clock, random, stdio, filesystem, network, environment, synchronization
    /// (locks), blocking (sleep_ms, poll_oneoff), host-state (handles); compute, regions,
    /// log and the memory gate are always granted. A module importing anything else is
    /// refused before it runs (exit 120, each import named).
    #[arg(long, value_name = "PRESET|LIST", default_value = "external")]
    grant: String,
    /// Escalation policy: a preset (server, clr, sqlserver, fail-fast) or a TOML file.
    #[arg(long, value_name = "PRESET|FILE", default_value = "server")]
    policy: String,
    /// Write events to stderr, one JSON object per line.
    #[arg(long, value_name = "FORMAT", value_parser = ["json"])]
    events: Option<String>,
    /// Run N sequential cycles of create domain → call → unload (a soak for leak hunting).
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: u64,
    /// With --repeat: make the N calls in one domain instead.
    #[arg(long = "reuse-domain")]
    reuse_domain: bool,
    /// Soak aid: put N host handles (dummy resources that count their releases) in each
    /// domain before its call, so every unload has handles to release. The run fails with
    /// code 119 if any of them was not released exactly once.
    #[arg(long, value_name = "N", default_value_t = 0)]
    handles: u32,
    /// Give the guest an environment variable (repeatable): KEY=VALUE sets it; a bare KEY
    /// passes the host's value of KEY (not set in the guest when the host has none). The host
    /// environment is not passed otherwise.
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Grant the guest a host directory, read-write (repeatable): HOST is opened and the
    /// guest sees it as GUEST (default: HOST, as wasmtime's CLI does). Paths inside it are
    /// resolved within it: `..` past its root, absolute paths and symlinks leading out are
    /// refused. Without --dir the guest has no file system.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Like --dir, but read-only: the guest may read and list, every write is refused.
    /// Preopens are given to the guest in order, the --dir ones first.
    #[arg(long = "dir-ro", value_name = "HOST[::GUEST]")]
    dirs_ro: Vec<String>,
    /// Read MODULE and a --policy file even when they are not regular files (a pipe such
    /// as `--policy <(cat policy.toml)`, a FIFO, a device): once, and no further than the
    /// size bound. Without it such files are refused, since a FIFO can block for ever and a
    /// device can be endless.
    #[arg(long = "allow-non-regular")]
    allow_non_regular: bool,
    /// Also write a fail-fast report (what broke, the domain and call, the last events, a
    /// backtrace) to FILE when Warden's own invariant breaks (exit 119). It always goes to
    /// stderr.
    #[arg(long = "fail-fast-report", value_name = "FILE")]
    fail_fast_report: Option<PathBuf>,
    /// Arguments for a WASI command (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// What the run does, after the command line was checked.
struct Plan {
    runtime: Runtime,
    module: Module,
    /// The calls: the --invoke ones, or the command's entry point.
    invokes: Vec<Invocation>,
    /// Exports to call as background calls.
    background: Vec<Invocation>,
    config: DomainConfig,
    options: CallOptions,
    repeat: u64,
    reuse_domain: bool,
    /// `--handles`: host handles put in each domain, and how many were opened and released.
    handles: u32,
    handles_opened: AtomicU64,
    handles_released: Arc<AtomicU64>,
}

pub fn run(args: RunArgs) -> i32 {
    let rt = match crate::error::async_runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let code = rt.block_on(async move {
        // Signals are handled from the start, before the module is read and compiled.
        let runtime = Arc::new(OnceLock::new());
        if let Err(e) = watch_signals(runtime.clone(), args.events.is_some()) {
            return fail(e);
        }
        let plan = match plan(args, &runtime) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        execute(plan).await
    });
    // Calls still running (background ones, or any the exit left behind) must not hold up
    // the end of the process.
    rt.shutdown_background();
    warden::stdio::flush(GUEST_OUTPUT_DRAIN);
    flush();
    code
}

/// Ends the process: the runtime's exit function (called once, at the end of shutdown) and
/// the second signal.
pub(crate) fn end_process(code: i32) -> ! {
    // Guest output still buffered goes out first, but a stalled reader holds no exit: the
    // drain is bounded, and skipped on a rude exit. std's stdout lock is not taken here (a
    // write blocked on a stalled pipe may hold it); `process::exit` flushes std's stdout
    // only if that lock is free.
    // A rude exit gives a live reader a moment for the last lines (warden's own messages go
    // through the same buffer), never the orderly bound.
    warden::stdio::flush(
        if matches!(
            code,
            exit_code::POLICY_RUDE_EXIT | exit_code::SIGNALLED_RUDE | exit_code::FATAL
        ) {
            RUDE_OUTPUT_DRAIN
        } else {
            GUEST_OUTPUT_DRAIN
        },
    );
    std::process::exit(code)
}

/// How long an orderly end of `warden run` waits for the guests' buffered output to reach a
/// slow reader.
const GUEST_OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `NAME: RESULTS` on stdout, after what the guest wrote there before it returned: the
/// guest's output goes through Warden's buffer and writer thread, this line does not, so the
/// buffer is drained first (bounded, as before an exit).
fn result_line(name: &str, out: &CallOutput) {
    warden::stdio::flush(GUEST_OUTPUT_DRAIN);
    self::out(&format!("{}: {}", escape(name, false), render(out)));
}

/// How long a rude end waits for buffered output (warden's last messages) to reach a live
/// reader.
const RUDE_OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_millis(200);

/// Says what stopped the run, and returns its exit code.
fn fail(e: CliError) -> i32 {
    err(&format!("warden: {}", escape(&e.to_string(), true)));
    e.exit_code()
}

/// Checks the command line and loads the module. The runtime, once made, goes in `slot`
/// for the signal watcher. An error carries its exit code.
fn plan(args: RunArgs, slot: &OnceLock<Runtime>) -> Result<Plan, CliError> {
    let policy = Policy::load_with(&args.policy, args.allow_non_regular).map_err(|source| {
        CliError::Policy {
            source,
            allowed: args.allow_non_regular,
        }
    })?;
    let deadline = match &args.deadline {
        None => None,
        Some(d) => warden_policy::parse_duration(d).map_err(|e| CliError::flag("--deadline", e))?,
    };
    let grant: warden::Grant =
        args.grant
            .parse()
            .map_err(|e: warden::capability::ParseGrantError| {
                CliError::flag("--grant", e.to_string())
            })?;
    let mut config = DomainConfig {
        grant,
        ..DomainConfig::default()
    };
    if let Some(m) = &args.max_memory {
        config.max_memory = parse_size(m).map_err(|e| CliError::flag("--max-memory", e))?;
    }
    // Refused at entry rather than after opening millions of handles (and GBs) one by one.
    let most = warden::warden_core::handles::MAX_QUOTA;
    if args.handles as usize > most {
        return Err(CliError::flag(
            "--handles",
            format!("at most {most} (a domain's handle table holds no more)"),
        ));
    }
    // Room for the soak aid's handles (the quota still applies beyond its bound).
    config.max_handles = config.max_handles.max(args.handles as usize);
    if args.repeat == 0 {
        return Err(CliError::flag("--repeat", "must be at least 1".to_string()));
    }
    if args.reuse_domain && args.repeat == 1 {
        return Err(CliError::Usage(
            "--reuse-domain needs --repeat N with N > 1".into(),
        ));
    }
    let env = guest_env(&args.env)?;
    let preopens = preopens(&args.dirs, &args.dirs_ro)?;
    if !preopens.is_empty() && !grant.allows(warden::Capability::Filesystem) {
        return Err(CliError::Usage(format!(
            "--dir/--dir-ro need the filesystem capability, which --grant `{grant}` does not \
             include (e.g. --grant {})",
            grant.with(warden::Capability::Filesystem)
        )));
    }
    let engine = warden::EngineConfig::default();
    let bytes = read_bounded(
        &args.module,
        engine.max_module_bytes as u64,
        args.allow_non_regular,
    )?;
    // The start function is bounded like every call when --deadline is given.
    if deadline.is_some() {
        config.start_deadline = deadline;
    }
    let memory_budget = match &args.memory_budget {
        Some(b) => Some(parse_size(b).map_err(|e| CliError::flag("--memory-budget", e))?),
        None => None,
    };
    let runtime = Runtime::new(RuntimeConfig {
        engine,
        policy,
        memory_budget,
        exit: Arc::new(|code| end_process(code)),
        ..RuntimeConfig::default()
    })
    .map_err(CliError::Runtime)?;
    let _ = slot.set(runtime.clone());
    if let Some(path) = &args.fail_fast_report {
        runtime.set_fail_fast_report(path);
    }
    if let Some(format) = &args.events {
        debug_assert_eq!(format, "json");
        runtime.subscribe(|event| {
            err(&event.to_json());
        });
    }
    let module = runtime
        .load_module(&bytes)
        .map_err(|source| CliError::Load {
            path: args.module.display().to_string(),
            source,
        })?;
    // Once for the run, before any domain: every forbidden import in one message.
    runtime
        .check_grant(&module, grant)
        .map_err(|source| CliError::Load {
            path: args.module.display().to_string(),
            source,
        })?;
    let invokes = if args.invoke.is_empty() {
        vec![Invocation::command(&module).map_err(CliError::Usage)?]
    } else {
        args.invoke
            .iter()
            .map(|text| Invocation::parse(&module, text))
            .collect::<Result<_, _>>()
            .map_err(CliError::Usage)?
    };
    let background = args
        .background_invoke
        .iter()
        .map(|text| Invocation::parse(&module, text))
        .collect::<Result<_, _>>()
        .map_err(CliError::Usage)?;
    let program = args
        .module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());
    config.wasi = WasiConfig {
        args: std::iter::once(program)
            .chain(args.args.iter().cloned())
            .collect(),
        env,
        preopens,
        inherit_stdio: true,
        // As `wasmtime run` does, for commands and `--invoke` alike.
        inherit_stdin: true,
        ..WasiConfig::default()
    };
    Ok(Plan {
        runtime,
        module,
        invokes,
        background,
        config,
        options: CallOptions {
            deadline,
            ..CallOptions::default()
        },
        repeat: args.repeat,
        reuse_domain: args.reuse_domain,
        handles: args.handles,
        handles_opened: AtomicU64::new(0),
        handles_released: Arc::new(AtomicU64::new(0)),
    })
}

/// `--env` values: KEY=VALUE, or a bare KEY that takes the host's value (skipped when the
/// host has none, as wasmtime does).
fn guest_env(values: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut env = Vec::new();
    for kv in values {
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv.as_str(), None),
        };
        if key.is_empty() {
            return Err(CliError::Usage(format!(
                "--env `{kv}`: the variable has no name (KEY[=VALUE])"
            )));
        }
        let value = match value {
            Some(v) => v,
            None => match std::env::var(key) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => continue,
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(CliError::Usage(format!(
                        "--env {key}: the host's value is not valid UTF-8; pass --env {key}=VALUE"
                    )));
                }
            },
        };
        env.push((key.to_string(), value));
    }
    Ok(env)
}

/// `--dir` and `--dir-ro` values, each checked (a directory this process can read) so that
/// a bad one is refused before the module is compiled, naming the flag and the path.
fn preopens(dirs: &[String], read_only: &[String]) -> Result<Vec<Preopen>, CliError> {
    let flagged = dirs
        .iter()
        .map(|d| ("--dir", d, false))
        .chain(read_only.iter().map(|d| ("--dir-ro", d, true)));
    let mut preopens = Vec::new();
    for (flag, value, read_only) in flagged {
        let mut parts = value.split("::");
        let host = parts.next().unwrap_or_default();
        let guest = parts.next().unwrap_or(host);
        if host.is_empty() || guest.is_empty() || parts.next().is_some() {
            return Err(CliError::Usage(format!(
                "{flag} `{}`: expected HOST or HOST::GUEST (non-empty, one `::`)",
                escape(value, false)
            )));
        }
        let preopen = Preopen {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            read_only,
        };
        preopen
            .check()
            .map_err(|e| CliError::Usage(format!("{flag} {}: {}", escape(host, false), e.why)))?;
        preopens.push(preopen);
    }
    Ok(preopens)
}

/// One call and its result, in command-line order (`None`: its task failed).
type Finished = Vec<(
    Option<Invocation>,
    Result<warden::CallOutput, warden::Error>,
)>;

async fn execute(plan: Plan) -> i32 {
    let plan = Arc::new(plan);
    start_background(&plan);
    let rss_before = proc_status();
    let started = Instant::now();
    let mut last: Finished = Vec::new();
    // Cycles actually run: a failing cycle ends the soak early.
    let mut cycles = 0u64;
    if plan.reuse_domain {
        (last, cycles) = run_reused(&plan).await;
    } else {
        for _ in 0..plan.repeat {
            last = run_cycle(&plan).await;
            cycles += 1;
            if last.iter().any(|(_, r)| r.is_err()) {
                break;
            }
        }
    }
    let (opened, released) = (
        plan.handles_opened.load(Ordering::SeqCst),
        plan.handles_released.load(Ordering::SeqCst),
    );
    if plan.repeat > 1 {
        let rss_after = proc_status();
        err(&format!(
            "warden: {cycles} of {} cycles in {:.2}s; rss {} KiB -> {} KiB; fds {} -> {}; domains left {}",
            plan.repeat,
            started.elapsed().as_secs_f64(),
            rss_before.0,
            rss_after.0,
            rss_before.1,
            rss_after.1,
            plan.runtime.domain_count()
        ));
    }
    if plan.handles > 0 {
        err(&format!(
            "warden: handles {opened} opened, {released} released"
        ));
    }
    let mut code = report(&last);
    if opened != released {
        // A release lost or run twice: Warden's own invariant, so fail fast.
        plan.runtime.fail_fast(&format!(
            "{opened} handles were opened but {released} released"
        ));
        code = exit_code::FATAL;
    }
    // The foreground calls are done: the orderly exit path, with this run's code (unless a
    // signal or a policy action started the exit first: then its code wins).
    plan.runtime.exit(code);
    plan.runtime.wait_exit().await.code
}

/// SIGTERM and SIGINT: the first starts an orderly exit, a second ends the process at once.
#[cfg(unix)]
fn watch_signals(runtime: Arc<OnceLock<Runtime>>, quiet: bool) -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|source| CliError::Setup {
            what: format!("cannot watch {name}"),
            source,
        })
    };
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if !quiet {
            err("warden: signalled; exiting in order (signal again to exit at once)");
        }
        signalled(&runtime);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        end_process(exit_code::SIGNALLED_RUDE);
    });
    Ok(())
}

/// The first signal: the runtime's orderly exit, or (before there is a runtime, e.g. while
/// the module compiles) an exit at once, since there is nothing to shut down yet.
fn signalled(runtime: &OnceLock<Runtime>) {
    match runtime.get() {
        Some(rt) => {
            rt.exit(exit_code::SIGNALLED);
        }
        None => end_process(exit_code::SIGNALLED),
    }
}

/// Ctrl-C where there are no Unix signals: the same two steps.
#[cfg(not(unix))]
fn watch_signals(runtime: Arc<OnceLock<Runtime>>, quiet: bool) -> Result<(), CliError> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if !quiet {
            err("warden: interrupted; exiting in order (again to exit at once)");
        }
        signalled(&runtime);
        if tokio::signal::ctrl_c().await.is_ok() {
            end_process(exit_code::SIGNALLED_RUDE);
        }
    });
    Ok(())
}

/// Starts each background export once, in its own domain. The domain stays loaded until the
/// process exits, so its finalizer runs in the exit's finalizer phase (if it is idle then).
fn start_background(plan: &Arc<Plan>) {
    for inv in &plan.background {
        let plan = plan.clone();
        let inv = inv.clone();
        let name = inv.name.clone();
        tokio::spawn(async move {
            let domain = match plan
                .runtime
                .create_domain(&plan.module, plan.config.clone())
                .await
            {
                Ok(d) => d,
                Err(e) => return print_background(&name, Err(e)),
            };
            let options = CallOptions {
                background: true,
                ..plan.options.clone()
            };
            print_background(&name, inv.call(&domain, options).await);
            // Hold the domain (dropping the last handle would unload it) until the exit.
            std::future::pending::<()>().await;
            drop(domain);
        });
    }
}

/// A finished background call: its values, or its failure (which sets no exit code). Being
/// refused because the run is already exiting is not worth a line.
fn print_background(name: &str, result: Result<CallOutput, warden::Error>) {
    match result {
        Ok(out) if out.exit_code.is_none() => {
            result_line(name, &out);
        }
        Ok(_) => {}
        Err(warden::Error::Call(CallError::ProcessExiting)) => {}
        Err(e) => err(&format!(
            "warden: {} (background): {}",
            escape(name, false),
            escape(&e.to_string(), false)
        )),
    }
}

/// Every export of the plan, concurrently, each in a fresh domain that is unloaded after. A
/// single export runs on this task: the same path as an embedder's `invoke`, no task hop.
async fn run_cycle(plan: &Arc<Plan>) -> Finished {
    if let [inv] = plan.invokes.as_slice() {
        return vec![cycle_one(plan.clone(), inv.clone()).await];
    }
    let tasks: Vec<_> = plan
        .invokes
        .iter()
        .map(|inv| tokio::spawn(cycle_one(plan.clone(), inv.clone())))
        .collect();
    let mut finished = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => finished.push(r),
            Err(e) => finished.push((
                None,
                Err(warden::Error::Config(format!("task failed: {e}"))),
            )),
        }
    }
    finished
}

/// One export in a fresh domain: create, call, unload.
async fn cycle_one(
    plan: Arc<Plan>,
    inv: Invocation,
) -> (Option<Invocation>, Result<CallOutput, warden::Error>) {
    let result = async {
        let domain = plan
            .runtime
            .create_domain(&plan.module, plan.config.clone())
            .await?;
        if let Err(e) = open_handles(&plan, &domain) {
            domain.unload().await;
            return Err(e);
        }
        let out = inv.call(&domain, plan.options.clone()).await;
        domain.unload().await;
        out
    }
    .await;
    (Some(inv), result)
}

/// `--reuse-domain`: N rounds of calls in one domain per export.
/// Returns the results and the most cycles any domain ran (each call is a cycle).
async fn run_reused(plan: &Arc<Plan>) -> (Finished, u64) {
    let mut finished = Vec::new();
    let mut cycles = 0u64;
    for inv in &plan.invokes {
        let result = async {
            let domain = plan
                .runtime
                .create_domain(&plan.module, plan.config.clone())
                .await?;
            if let Err(e) = open_handles(plan, &domain) {
                domain.unload().await;
                return Err(e);
            }
            let mut out = None;
            let mut ran = 0u64;
            for _ in 0..plan.repeat {
                let result = inv.call(&domain, plan.options.clone()).await;
                ran += 1;
                cycles = cycles.max(ran);
                match result {
                    Ok(o) => out = Some(o),
                    Err(e) => {
                        domain.unload().await;
                        return Err(e);
                    }
                }
            }
            domain.unload().await;
            Ok(out.expect("repeat is at least 1"))
        }
        .await;
        finished.push((Some(inv.clone()), result));
    }
    (finished, cycles)
}

/// `--handles N`: puts N dummy host resources in the domain, each counting its release.
fn open_handles(plan: &Plan, domain: &Domain) -> Result<(), warden::Error> {
    for i in 0..plan.handles {
        let released = plan.handles_released.clone();
        plan.handles_opened.fetch_add(1, Ordering::SeqCst);
        domain.insert_handle(i, move |_| {
            released.fetch_add(1, Ordering::SeqCst);
        })?;
    }
    Ok(())
}

/// Prints results (`NAME: VALUES`) and failures; returns the process exit code.
fn report(finished: &Finished) -> i32 {
    let mut code = None;
    for (inv, result) in finished {
        let name = inv.as_ref().map_or("?", |i| i.name.as_str());
        let command = inv.as_ref().is_some_and(|i| i.command);
        match result {
            Ok(out) => {
                if let Some(c) = out.exit_code {
                    code.get_or_insert(c);
                } else if command {
                    if command_failed(out) {
                        code.get_or_insert(1);
                    }
                } else {
                    result_line(name, out);
                }
            }
            Err(e) => {
                // Messages and backtraces carry the guest's own names (imports, functions):
                // escaped, a message on one line, so a name cannot forge a line.
                err(&format!(
                    "warden: {}: {}",
                    escape(name, false),
                    escape(&e.to_string(), false)
                ));
                if let warden::Error::Call(
                    CallError::Trap { backtrace, .. } | CallError::StackOverflow { backtrace },
                ) = e
                    && !backtrace.is_empty()
                {
                    err(&backtrace_lines(backtrace.trim_end()));
                }
                code.get_or_insert(exit_code::for_error(e));
            }
        }
    }
    code.unwrap_or(exit_code::SUCCESS)
}

/// A wasm backtrace as wasmtime writes it (a heading, then frame lines `  N: ..`, symbol
/// lines `  - ..` and `  at ..`, a `note:`), escaped. A line of another shape can only come
/// from a newline in a guest's function or module name: it is joined to the line before,
/// with the newline escaped, so a guest cannot forge an output line.
fn backtrace_lines(backtrace: &str) -> String {
    let structural = |line: &str| {
        let rest = line.trim_start();
        line == "error while executing at wasm backtrace:"
            || line.starts_with("note: ")
            || (rest.len() < line.len()
                && (rest.starts_with("- ")
                    || rest.starts_with("at ")
                    || rest.split_once(':').is_some_and(|(n, _)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    })))
    };
    let mut out = String::with_capacity(backtrace.len());
    for (i, line) in backtrace.split('\n').enumerate() {
        if i > 0 {
            out.push_str(if structural(line) { "\n" } else { "\\n" });
        }
        out.push_str(&escape(line, false));
    }
    out
}

/// (resident set in KiB, open file descriptors) of this process, where /proc has them.
fn proc_status() -> (u64, usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}
