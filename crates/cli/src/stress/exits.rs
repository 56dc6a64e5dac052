//! Racing exits, in a child process (the binary re-executed with a hidden subcommand, since an
//! exit ends the process): busy domains, a domain whose finalizer never returns, maybe an exit
//! hook that never returns, and several threads calling `exit` at once. The child must end with
//! one of the racers' codes (or the watchdog's), within the policy's `process-exit` bound.

use std::time::{Duration, Instant};
use warden::{
    CallOptions, DomainConfig, ExitMode, Operation, Policy, Runtime, RuntimeConfig, exit_code,
};

use super::mix::Rng;

/// The hidden subcommand's name.
pub const CHILD: &str = "stress-exit-child";

/// One child's end.
pub struct ExitRun {
    pub code: Option<i32>,
    pub end_ms: f64,
    pub problem: Option<String>,
}

/// The child: sets the scene, says `racing` on stdout, and races the exits. Never returns
/// normally: the runtime's exit ends the process.
pub fn child(seed: u64, policy: Policy) -> i32 {
    let Ok(tokio) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        return exit_code::FATAL;
    };
    tokio.block_on(async move {
        let mut rng = Rng::new(seed);
        let Ok(rt) = Runtime::new(RuntimeConfig {
            policy,
            memory_budget: Some(256 << 20),
            ..RuntimeConfig::default()
        }) else {
            return exit_code::FATAL;
        };
        let (Ok(hostile), Ok(finalizer)) = (
            rt.load_module(include_bytes!("../../guests/stress.wat")),
            rt.load_module(include_bytes!("../../guests/finalizer.wat")),
        ) else {
            return exit_code::FATAL;
        };
        let mut keep = Vec::new();
        for (module, export) in [
            (&hostile, "spin"),
            (&hostile, "critical_forever"),
            (&hostile, "sleep_long"),
            (&finalizer, "answer"),
        ] {
            if rng.chance(0.25) {
                continue;
            }
            let Ok(domain) = rt.create_domain(module, DomainConfig::default()).await else {
                return exit_code::FATAL;
            };
            let background = rng.chance(0.5);
            let call = domain.call(
                export,
                &[],
                CallOptions {
                    background,
                    ..CallOptions::default()
                },
            );
            keep.push((domain, call));
        }
        if rng.chance(0.3) {
            let _ = rt.add_exit_hook("hangs", std::future::pending::<()>);
        }
        let racers = 2 + rng.below(4);
        let plan: Vec<(i32, ExitMode, Duration)> = (0..racers)
            .map(|i| {
                let mode = match rng.below(10) {
                    0 => ExitMode::Rude,
                    1 => ExitMode::Fast,
                    _ => ExitMode::Orderly,
                };
                (10 + i as i32, mode, Duration::from_micros(rng.below(2000)))
            })
            .collect();
        println!("racing");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        for (code, mode, stagger) in plan {
            let rt = rt.clone();
            std::thread::spawn(move || {
                std::thread::sleep(stagger);
                match mode {
                    ExitMode::Orderly => rt.exit(code),
                    mode => rt.exit_with(code, mode),
                };
            });
        }
        std::future::pending::<i32>().await
    })
}

/// Runs one child and checks how it ended.
pub async fn race(seed: u64, policy_arg: &str, policy: &Policy) -> ExitRun {
    let bound = policy
        .operation(Operation::ProcessExit)
        .timeout
        .unwrap_or(Duration::from_secs(60));
    // /proc/self/exe runs this very binary even if a rebuild has replaced the file since.
    let proc_exe = std::path::Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        Ok(proc_exe.to_path_buf())
    } else {
        std::env::current_exe()
    };
    let Ok(exe) = exe else {
        return ExitRun {
            code: None,
            end_ms: 0.0,
            problem: Some("cannot find the warden binary to re-run".into()),
        };
    };
    // A blocking child, waited for on a blocking thread (the async runtime needs no process
    // support for it).
    let policy_arg = policy_arg.to_string();
    tokio::task::spawn_blocking(move || race_blocking(exe, seed, &policy_arg, bound))
        .await
        .unwrap_or_else(|e| ExitRun {
            code: None,
            end_ms: 0.0,
            problem: Some(format!("the exit race's thread failed: {e}")),
        })
}

fn race_blocking(exe: std::path::PathBuf, seed: u64, policy_arg: &str, bound: Duration) -> ExitRun {
    use std::io::BufRead;
    let spawned = std::process::Command::new(exe)
        .args([CHILD, "--seed", &seed.to_string(), "--policy", policy_arg])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return ExitRun {
                code: None,
                end_ms: 0.0,
                problem: Some(format!("cannot start the exit child: {e}")),
            };
        }
    };
    let mut line = String::new();
    let read =
        std::io::BufReader::new(child.stdout.take().expect("stdout is piped")).read_line(&mut line);
    // Startup (a fresh engine, two compiles) is not shutdown: the clock starts at `racing`.
    let started = Instant::now();
    if read.is_err() || line.trim_end() != "racing" {
        let status = child.wait().ok();
        return ExitRun {
            code: status.and_then(|s| s.code()),
            end_ms: 0.0,
            problem: Some(format!(
                "exit child (seed {seed}) died before racing: {status:?}"
            )),
        };
    }
    let limit = bound + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let end_ms = started.elapsed().as_secs_f64() * 1e3;
                let code = status.code();
                let fine =
                    code.is_some_and(|c| (10..16).contains(&c) || c == exit_code::POLICY_RUDE_EXIT);
                return ExitRun {
                    code,
                    end_ms,
                    problem: (!fine).then(|| format!("exit child (seed {seed}) ended with {status}, not a racer's code nor the watchdog's")),
                };
            }
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return ExitRun {
                    code: None,
                    end_ms: started.elapsed().as_secs_f64() * 1e3,
                    problem: Some(format!(
                        "exit child (seed {seed}) still running {limit:?} after its exit began (process-exit bound {bound:?})"
                    )),
                };
            }
            // Polling the child's end: it is not a synchronisation, only a way to bound it.
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return ExitRun {
                    code: None,
                    end_ms: 0.0,
                    problem: Some(format!("waiting for the exit child: {e}")),
                };
            }
        }
    }
}
