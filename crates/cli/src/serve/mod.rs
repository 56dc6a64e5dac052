//! `warden serve`: `wasi:http/proxy` components served per request, each request a call in a
//! domain, so that no request — however hostile — takes the server or its neighbours down.
//!
//! The parts: [`config`] (the TOML file, checked before anything listens), [`admission`]
//! (in flight and queue bounds), [`quarantine`] (restart intensity and cool-down),
//! [`server`] (routing, statuses, the listeners, drain), [`domains`] (the real handler:
//! domains per request or reused), [`metrics`] (Prometheus). How it ends: the first
//! SIGTERM/SIGINT stops accepting, turns readiness off and drains the requests in flight
//! within `drain`; then the runtime's orderly exit (bounded by the policy's `process-exit`).
//! Exit 0 when every request drained in time, 117 when the drain bound cut some off; a
//! second signal exits at once with 118.

pub mod admission;
pub mod config;
pub mod domains;
pub mod metrics;
pub mod quarantine;
pub mod server;

#[cfg(test)]
mod tests;

use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use warden::{Runtime, RuntimeConfig, exit_code};

use crate::error::CliError;
use crate::output::{err, escape, flush, out};
use config::{ComponentSource, ConfigError, ServeConfig};
use server::{App, Drained, Server};

pub const SERVE_HELP: &str = "\
Configuration (TOML, kebab-case keys, unknown keys refused; see docs/serve.md):
    listen = \"127.0.0.1:8080\"      # port 0: any; the bound address is printed
    admin = \"127.0.0.1:9090\"       # /healthz /readyz /metrics /admin/domains /admin/apps
    policy = \"server\"              # preset or policy file (relative to the config)
    drain = \"20s\"                  # SIGTERM drain bound, below the policy's process-exit
    memory-budget = \"1GiB\"         # default: what the machine can give
    [admission]
    max-in-flight = 8              # default: CPUs x 4
    queue = 64                     # default: CPUs x 16; beyond it 503 + Retry-After
    retry-after = \"1s\"
    [[app]]
    name = \"hello\"
    route = \"/\"                    # path prefix; the longest wins
    component = \"hello.wasm\"       # a wasi:http/proxy component, relative to the config
    deadline = \"5s\"                # per request; passing it is 504
    max-memory = \"64MiB\"
    reserve = \"1MiB\"               # memory gate per request (refused: 503)
    instance-reuse = 1             # 1: a fresh domain per request; N: a domain serves N
    recycle-memory = \"32MiB\"       # with reuse: unload a domain holding more than this
    restart-intensity = { unloads = 5, within = \"30s\" }   # more: quarantined (503)
    cool-down = \"30s\"              # or POST /admin/apps/NAME/restore on the admin port
    allowed-outbound-hosts = []    # outbound HTTP denied unless listed
    grant = \"network\"              # imports allowed: safe plus these presets/categories
                                   # (stdio, filesystem, network, environment, ...); a
                                   # component importing more is refused at start (4)
Without CONFIG: the bundled example app at / (routes /hello, /loop, /hog, /recurse, /trap,
/sleep) with a 2s deadline, 64MiB and grant safe,network.

Statuses: the guest's own; 504 deadline; 503 admission, quarantine, insufficient memory,
process exiting, runtime disabled (with Retry-After); 500 trap, stack overflow, out of
memory, aborted, domain unloaded, no response; 502 the guest answered a wasi:http error code.

Exit codes:
    0    SIGTERM/SIGINT: every request in flight drained within `drain`, then exited in order
    2    bad command line
    4    bad configuration: unknown key, bad value, missing or unfit component, duplicate
         name or route, an address that cannot be bound, a bad grant or a component
         importing what its grant forbids (the message names the key)
  114-116  the policy chose an exit (as warden run), or the exit watchdog ended it (116)
  117    SIGTERM/SIGINT, and the drain bound passed with requests still in flight
  118    second signal (rude exit)
  119    Warden's own invariant broke (fail-fast)";

#[derive(Args)]
pub struct ServeArgs {
    /// The configuration file (TOML). Without it: the bundled example app at `/`.
    config: Option<PathBuf>,
    /// Listen here instead of the configuration's `listen` (IP:PORT; port 0: any).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Serve the admin endpoints here instead of the configuration's `admin`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Write events to stderr, one JSON object per line.
    #[arg(long, value_name = "FORMAT", value_parser = ["json"])]
    events: Option<String>,
    /// Write the bundled example component to FILE and exit (for benchmarks and trials).
    #[arg(long = "write-example", value_name = "FILE", hide = true)]
    write_example: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> i32 {
    if let Some(path) = &args.write_example {
        return match std::fs::write(path, warden::http::example::component_bytes()) {
            Ok(()) => exit_code::SUCCESS,
            Err(source) => fail(CliError::Setup {
                what: format!("cannot write {}", path.display()),
                source,
            }),
        };
    }
    let config = match configure(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let rt = match crate::error::async_runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let code = rt.block_on(async move {
        match serve(config, args.events.is_some()).await {
            Ok(code) => code,
            Err(e) => fail(e),
        }
    });
    rt.shutdown_background();
    flush();
    code
}

fn fail(e: CliError) -> i32 {
    err(&format!("warden: {}", escape(&e.to_string(), true)));
    e.exit_code()
}

/// The configuration, with the command line's overrides.
fn configure(args: &ServeArgs) -> Result<ServeConfig, CliError> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::example(),
    };
    let addr = |flag: &str, v: &str| {
        v.parse().map_err(|_| ConfigError {
            file: "(command line)".into(),
            key: flag.into(),
            reason: format!("`{v}` is not an IP:PORT address (e.g. 127.0.0.1:8080)"),
        })
    };
    if let Some(l) = &args.listen {
        config.listen = addr("--listen", l)?;
    }
    if let Some(a) = &args.admin {
        config.admin = addr("--admin", a)?;
    }
    Ok(config)
}

async fn serve(config: ServeConfig, events: bool) -> Result<i32, CliError> {
    // Signals are watched from the start: one before serving ends the drain at once.
    let first = watch_signals()?;
    let file = config.file.clone();
    let runtime = Runtime::new(RuntimeConfig {
        policy: config.policy.clone(),
        memory_budget: config.memory_budget,
        exit: Arc::new(|code| crate::run::end_process(code)),
        ..RuntimeConfig::default()
    })
    .map_err(CliError::Runtime)?;
    let metrics = Arc::new(metrics::Metrics::new());
    {
        let metrics = metrics.clone();
        runtime.subscribe(move |event| {
            metrics.event(event);
            if events {
                err(&event.to_json());
            }
        });
    }
    let apps: Vec<Arc<App>> = config
        .apps
        .iter()
        .map(|a| Arc::new(App::new(a.clone())))
        .collect();
    let mut modules = HashMap::new();
    for app in &apps {
        let module = load_component(&runtime, &app.config, &file)?;
        modules.insert(app.config.name.clone(), module);
    }
    let bind = |key: &str, addr| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(|e| ConfigError {
                file: file.clone(),
                key: key.into(),
                reason: format!("cannot listen on {addr}: {e}"),
            })
    };
    let listener = bind("listen", config.listen)?;
    let admin = bind("admin", config.admin)?;
    let (listen_addr, admin_addr) = (local(&listener), local(&admin));
    let handler = domains::Apps::new(runtime.clone(), &apps, modules);
    let server = Server::new(
        handler,
        apps,
        admission::Admission::new(config.admission.max_in_flight, config.admission.queue),
        config.admission.retry_after,
        metrics,
        runtime.clone(),
    );
    out(&format!("listening on http://{listen_addr}"));
    out(&format!("admin on http://{admin_addr}"));
    flush();
    tokio::spawn(server::serve_admin(server.clone(), admin));
    let drained = server::serve_requests(
        server.clone(),
        listener,
        async move {
            let _ = first.await;
            err("warden: signalled; draining requests (signal again to exit at once)");
            flush();
        },
        config.drain,
    )
    .await;
    let code = match drained {
        Drained::InTime => exit_code::SUCCESS,
        Drained::CutOff(n) => {
            err(&format!(
                "warden: the drain bound passed with {n} connections still open; exiting"
            ));
            exit_code::SIGNALLED
        }
    };
    runtime.exit(code);
    Ok(runtime.wait_exit().await.code)
}

fn local(l: &tokio::net::TcpListener) -> String {
    l.local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}

/// Reads and loads an app's component, refusing one that is not a `wasi:http/proxy`.
fn load_component(
    runtime: &Runtime,
    app: &config::AppConfig,
    file: &str,
) -> Result<warden::Module, CliError> {
    let refused = |reason: String| ConfigError {
        file: file.into(),
        key: format!("app \"{}\".component", app.name),
        reason,
    };
    let bytes = match &app.component {
        ComponentSource::Example => warden::http::example::component_bytes(),
        ComponentSource::File(path) => crate::input::read_bounded(
            path,
            warden::EngineConfig::default().max_module_bytes as u64,
            false,
        )
        .map_err(|e| refused(e.to_string()))?,
    };
    let module = runtime
        .load_module(&bytes)
        .map_err(|e| refused(format!("{}: {e}", component_name(&app.component))))?;
    if !module.is_http_proxy() {
        return Err(refused(format!(
            "{} is not a wasi:http/proxy component (it exports no \
             wasi:http/incoming-handler@0.2.x#handle)",
            component_name(&app.component)
        ))
        .into());
    }
    // Refused here, before anything listens, rather than at each request.
    runtime
        .check_grant(&module, app.grant)
        .map_err(|e| ConfigError {
            file: file.into(),
            key: format!("app \"{}\".grant", app.name),
            reason: format!("{}: {e}", component_name(&app.component)),
        })?;
    Ok(module)
}

fn component_name(source: &ComponentSource) -> String {
    match source {
        ComponentSource::Example => "the bundled example".into(),
        ComponentSource::File(p) => p.display().to_string(),
    }
}

/// The first SIGTERM/SIGINT resolves the receiver (the drain begins); a second one ends the
/// process at once (118), whatever the drain or the exit is doing.
#[cfg(unix)]
fn watch_signals() -> Result<tokio::sync::oneshot::Receiver<()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind, name: &str| {
        signal(kind).map_err(|source| CliError::Setup {
            what: format!("cannot watch {name}"),
            source,
        })
    };
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    let (first, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        let _ = first.send(());
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        err("warden: signalled again; exiting at once");
        crate::run::end_process(exit_code::SIGNALLED_RUDE);
    });
    Ok(first_rx)
}

/// Ctrl-C where there are no Unix signals: the same two steps.
#[cfg(not(unix))]
fn watch_signals() -> Result<tokio::sync::oneshot::Receiver<()>, CliError> {
    let (first, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        let _ = first.send(());
        if tokio::signal::ctrl_c().await.is_ok() {
            crate::run::end_process(exit_code::SIGNALLED_RUDE);
        }
    });
    Ok(first_rx)
}
