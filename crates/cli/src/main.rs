//! `warden`: run WebAssembly guests under Warden's hosting model, and check policies.
#![forbid(unsafe_code)]

mod demo;
mod error;
mod input;
mod invoke;
mod output;
mod run;
mod serve;
mod size;
mod stress;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use warden::exit_code;
use warden_policy::{Policy, Preset};

// The binary's allocator, not the library's (embedders keep theirs). glibc's malloc kept the
// memory freed by transient large buffers (compiling modules) in its per-thread arenas, so a
// long `warden stress` or `warden serve` grew RSS without leaking; mimalloc returns freed pages
// to the OS. Its `no_thp` feature: with transparent huge pages it madvises its arenas into
// 2 MiB pages, which doubled RSS here (issue 14; the README's Stress section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "A reliability-first host for WebAssembly guests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a WASI command (`_start`) or exported functions, each in a fresh domain.
    #[command(after_help = run::EXIT_CODES_HELP)]
    Run(Box<run::RunArgs>),
    /// Serve wasi:http/proxy components over HTTP, each request a call in a domain, with
    /// admission, reuse, quarantine, /healthz, /readyz, /metrics and a SIGTERM drain.
    /// Without CONFIG: the bundled example app on 127.0.0.1:8080.
    #[command(after_help = serve::SERVE_HELP)]
    Serve(Box<serve::ServeArgs>),
    /// Start `warden serve` on its bundled example, drive it with friendly and hostile
    /// requests at once for a few seconds, show a live table and report what was contained.
    #[command(after_help = demo::DEMO_HELP)]
    Demo(demo::DemoArgs),
    /// Check, show and explain escalation policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a seeded, replayable hostile mix (bundled guests, generated ones, yours) with
    /// aborts, unloads, deadlines, memory pressure, racing exits and failpoints, and check
    /// that nothing leaked, nothing died and every failure met its policy.
    #[command(after_help = stress::STRESS_HELP)]
    Stress(Box<stress::StressArgs>),
    /// (internal) The child process of `warden stress`'s racing exits.
    #[command(name = "stress-exit-child", hide = true)]
    StressExitChild(stress::ExitChildArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file: exit 0 when legal, 3 and the offending key otherwise.
    Check {
        /// The policy file (TOML).
        file: String,
        /// Read the file even when it is not a regular file (a pipe): once, bounded.
        #[arg(long = "allow-non-regular")]
        allow_non_regular: bool,
    },
    /// Print a preset as a policy file (server, clr, sqlserver, fail-fast).
    Show {
        /// The preset's name.
        preset: String,
    },
    /// Print every failure and operation with its final action and timeout.
    Explain {
        /// A preset name or a policy file.
        policy: String,
        /// Read the file even when it is not a regular file (a pipe): once, bounded.
        #[arg(long = "allow-non-regular")]
        allow_non_regular: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings (e.g. the allocator falling back to on-demand) go to stderr; RUST_LOG overrides.
    // wasmtime-wasi's own warnings ("p1 sock_shutdown is not implemented") are not: they would
    // land in the middle of the guest's stderr, where wasmtime's CLI prints nothing.
    // A stress run causes the warnings' every cause on purpose: only errors are shown there.
    let quiet = matches!(
        cli.command,
        Command::Stress(_) | Command::StressExitChild(_)
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet {
                    "error"
                } else {
                    "warn,wasmtime_wasi=error"
                })
            }),
        )
        .with_writer(|| output::TracingStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    let code = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Demo(args) => demo::run(args),
        Command::Policy(cmd) => policy(cmd),
        Command::Stress(args) => stress::run(*args),
        Command::StressExitChild(args) => stress::exit_child(args),
    };
    // Messages go out through warden's stderr buffer (`output::err`).
    warden::stdio::flush(std::time::Duration::from_secs(2));
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn policy(cmd: PolicyCommand) -> i32 {
    let refused = |allowed| move |source| error::CliError::Policy { source, allowed };
    let result = match cmd {
        PolicyCommand::Check {
            file,
            allow_non_regular,
        } => Policy::from_file_with(std::path::Path::new(&file), allow_non_regular)
            .map(|_| format!("{file}: ok"))
            .map_err(refused(allow_non_regular)),
        PolicyCommand::Show { preset } => preset
            .parse::<Preset>()
            .map(|p| Policy::preset(p).to_toml())
            .map_err(error::CliError::from),
        PolicyCommand::Explain {
            policy,
            allow_non_regular,
        } => Policy::load_with(&policy, allow_non_regular)
            .map(|p| p.explain())
            .map_err(refused(allow_non_regular)),
    };
    match result {
        Ok(text) => {
            output::out(text.trim_end());
            exit_code::SUCCESS
        }
        Err(e) => {
            output::err(&format!("warden: {}", output::escape(&e.to_string(), true)));
            e.exit_code()
        }
    }
}
