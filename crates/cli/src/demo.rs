//! `warden demo`: Warden's main job, visible in seconds. It starts `warden serve` (this same
//! binary, as a child process) on the bundled example component with two apps — `friendly`
//! at `/hello` and `hostile` at `/` — drives it with friendly requests and every hostility at
//! once, prints a live row a second (req/s, p99, outcomes, escalations, memory) and ends with
//! a report of what was contained, after the server's SIGTERM drain.
//!
//! The client is a few lines of HTTP/1.1 over tokio's `TcpStream` (one request per
//! connection): the demo measures the server, not a client library.
//!
//! Where it ends: the demo checks containment (every friendly request answered 200, each
//! hostility answered its status, the server drained and exited 0), not speed: the load is
//! modest and shares the machine with the server. `bench/serve` measures throughput.

use clap::Args;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output::{err, flush, out};

pub const DEMO_HELP: &str = "\
The hostile routes of the bundled example: /loop (spins), /hog (grows memory), /recurse
(overflows its stack), /trap (traps), /sleep (blocks an hour in a host call). Each runs in a
domain of its own, under a 1 s deadline and 16 MiB; the hostile app is quarantined (503) when
it fails too often, and comes back after its cool-down. The friendly app is never affected.

Exit codes:
    0    contained: every friendly request answered 200, the server drained and exited 0
    1    not contained: a friendly request failed, or the server did not end well
    3    bad option (a duration), or the server could not be started";

#[derive(Args)]
pub struct DemoArgs {
    /// How long to drive the server.
    #[arg(long, default_value = "8s", value_name = "DURATION")]
    duration: String,
    /// Friendly clients sending requests back to back.
    #[arg(long, default_value_t = 8, value_name = "N")]
    friendly: usize,
}

/// The hostile routes, each driven by one client, and the status each must get.
const HOSTILE: [(&str, &str); 5] = [
    ("/loop", "504 at its deadline"),
    ("/hog", "500 out of memory"),
    ("/recurse", "500 stack overflow"),
    ("/trap", "500 trap"),
    ("/sleep", "504 at its deadline (blocked in a host call)"),
];

const CONFIG: &str = r#"# Written by `warden demo`.
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
drain = "10s"

[admission]
max-in-flight = 64
queue = 256

[[app]]
name = "friendly"
route = "/hello"
component = "example.wasm"
grant = "network"
deadline = "1s"

[[app]]
name = "hostile"
route = "/"
component = "example.wasm"
grant = "network"
deadline = "1s"
max-memory = "16MiB"
restart-intensity = { unloads = 40, within = "2s" }
cool-down = "1s"
"#;

/// One request's result: its status (0: no answer) and how long it took.
#[derive(Clone, Copy)]
struct Sample {
    status: u16,
    took: Duration,
}

#[derive(Default)]
struct Tally {
    friendly: Vec<Sample>,
    hostile: BTreeMap<&'static str, Vec<Sample>>,
}

pub fn run(args: DemoArgs) -> i32 {
    let duration = match warden_policy::parse_duration(&args.duration) {
        Ok(Some(d)) if d <= Duration::from_secs(3600) => d,
        Ok(_) => return refuse("--duration: at most 1h"),
        Err(e) => return refuse(&format!("--duration: {e}")),
    };
    let dir = std::env::temp_dir().join(format!("warden-demo-{}", std::process::id()));
    let started = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::write(
                dir.join("example.wasm"),
                warden::http::example::component_bytes(),
            )
        })
        .and_then(|()| std::fs::write(dir.join("warden.toml"), CONFIG))
        .map_err(|e| format!("cannot write the demo's files in {}: {e}", dir.display()))
        .and_then(|()| Server::start(dir.join("warden.toml")));
    let mut server = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return refuse(&e);
        }
    };
    let rt = match crate::error::async_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            server.kill();
            return refuse(&e.to_string());
        }
    };
    out(&format!(
        "warden demo: `warden serve` on http://{} (admin http://{}); {} friendly clients on \
         /hello and one client per hostility for {:?}\n",
        server.listen, server.admin, args.friendly, duration
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    rt.block_on(drive(&server, args.friendly, duration, tally.clone()));
    let drain = Instant::now();
    let exit = server.terminate();
    let drained_in = drain.elapsed();
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    report(&tally, exit, drained_in)
}

fn refuse(message: &str) -> i32 {
    err(&format!("warden demo: {message}"));
    warden::exit_code::BAD_INPUT
}

/// The `warden serve` child and its addresses.
struct Server {
    child: Child,
    listen: String,
    admin: String,
}

impl Server {
    fn start(config: PathBuf) -> Result<Server, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start `warden serve`: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout from `warden serve`")?;
        // The two address lines come first; the reader thread ends with the child.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let addr = |prefix: &str| -> Result<String, String> {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| "`warden serve` did not start within 60 s".to_string())?;
            line.strip_prefix(prefix)
                .map(str::to_string)
                .ok_or_else(|| format!("unexpected line from `warden serve`: {line}"))
        };
        match (addr("listening on http://"), addr("admin on http://")) {
            (Ok(listen), Ok(admin)) => Ok(Server {
                child,
                listen,
                admin,
            }),
            (Err(e), _) | (_, Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// SIGTERM, then the exit code of the drain and orderly exit (None: killed after 60 s).
    fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if !signalled {
            self.kill();
            return None;
        }
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        self.kill();
        None
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Runs the clients for `duration`, printing a row a second.
async fn drive(server: &Server, friendly: usize, duration: Duration, tally: Arc<Mutex<Tally>>) {
    let end = Instant::now() + duration;
    let mut clients = Vec::new();
    for _ in 0..friendly {
        let (addr, tally) = (server.listen.clone(), tally.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < end {
                let s = get(&addr, "/hello").await;
                lock(&tally).friendly.push(s);
            }
        }));
    }
    for (path, _) in HOSTILE {
        let (addr, tally) = (server.listen.clone(), tally.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < end {
                let s = get(&addr, path).await;
                lock(&tally).hostile.entry(path).or_default().push(s);
                // A hostile tenant at a modest rate, backing off while quarantined.
                let pause = if s.status == 503 { 200 } else { 100 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    out(&format!(
        "{:>4}  {:>9}  {:>9}  {:>8}  {:>22}  {:>11}  {:>7}  {:>10}",
        "t",
        "friendly/s",
        "p99",
        "failed",
        "hostile 504/500/503",
        "escalations",
        "domains",
        "memory"
    ));
    let mut seen = 0;
    for t in 1.. {
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep_until((now + Duration::from_secs(1)).min(end).into()).await;
        let metrics = get_text(&server.admin, "/metrics")
            .await
            .unwrap_or_default();
        let row = {
            let tally = lock(&tally);
            let fresh = &tally.friendly[seen..];
            seen = tally.friendly.len();
            let failed = tally.friendly.iter().filter(|s| s.status != 200).count();
            let mut hostile = [0usize; 3];
            for s in tally.hostile.values().flatten() {
                match s.status {
                    504 => hostile[0] += 1,
                    500 => hostile[1] += 1,
                    503 => hostile[2] += 1,
                    _ => {}
                }
            }
            format!(
                "{:>3}s  {:>9}  {:>9}  {:>8}  {:>22}  {:>11}  {:>7}  {:>10}",
                t,
                fresh.len(),
                format!("{:.1?}", percentile(fresh, 0.99)),
                failed,
                format!("{}/{}/{}", hostile[0], hostile[1], hostile[2]),
                metric_sum(&metrics, "warden_escalations_total"),
                metric_sum(&metrics, "warden_live_domains"),
                format!(
                    "{:.1} MiB",
                    metric_sum(&metrics, "warden_memory_used_bytes") / (1 << 20) as f64
                ),
            )
        };
        out(&row);
        flush();
    }
    for c in clients {
        let _ = c.await;
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

/// The report; the exit code says whether everything was contained.
fn report(tally: &Tally, exit: Option<i32>, drained_in: Duration) -> i32 {
    let ok = tally.friendly.iter().filter(|s| s.status == 200).count();
    let failed = tally.friendly.len() - ok;
    out(&format!(
        "\nfriendly: {} requests, {ok} answered 200, {failed} failed; p50 {:.1?}, p99 {:.1?}, \
         max {:.1?}",
        tally.friendly.len(),
        percentile(&tally.friendly, 0.5),
        percentile(&tally.friendly, 0.99),
        percentile(&tally.friendly, 1.0),
    ));
    out("hostile (each in its own domain, contained):");
    for (path, expected) in HOSTILE {
        let samples = tally.hostile.get(path).map_or(&[][..], Vec::as_slice);
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for s in samples {
            *by_status.entry(s.status).or_default() += 1;
        }
        let statuses: Vec<String> = by_status
            .iter()
            .map(|(status, n)| match status {
                0 => format!("{n} × no answer"),
                503 => format!("{n} × 503 (quarantined or refused)"),
                s => format!("{n} × {s}"),
            })
            .collect();
        let answered: Vec<Sample> = samples
            .iter()
            .copied()
            .filter(|s| s.status != 503)
            .collect();
        out(&format!(
            "  {path:<9} expected {expected}: {}; longest {:.2?}",
            if statuses.is_empty() {
                "no request finished".to_string()
            } else {
                statuses.join(", ")
            },
            percentile(&answered, 1.0),
        ));
    }
    let server = match exit {
        Some(0) => format!("drained and exited 0 in {drained_in:.2?} after SIGTERM"),
        Some(code) => format!("exited {code} after SIGTERM"),
        None => "did not exit within 60 s of SIGTERM (killed)".to_string(),
    };
    out(&format!("server: {server}"));
    let contained = failed == 0 && !tally.friendly.is_empty() && exit == Some(0);
    out(if contained {
        "contained: every friendly request was answered 200 while every hostility ran beside it"
    } else {
        "NOT contained: see above"
    });
    if contained { 0 } else { 1 }
}

/// The `q` quantile of the samples' durations (zero for none).
fn percentile(samples: &[Sample], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort_unstable();
    let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
    took[i]
}

/// The sum of a metric's samples in Prometheus text (0 when absent).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One GET over a fresh connection: its status (0 when it got none within 30 s).
async fn get(addr: &str, path: &str) -> Sample {
    let start = Instant::now();
    let status = match tokio::time::timeout(Duration::from_secs(30), request(addr, path)).await {
        Ok(Ok((status, _))) => status,
        _ => 0,
    };
    Sample {
        status,
        took: start.elapsed(),
    }
}

async fn get_text(addr: &str, path: &str) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(5), request(addr, path)).await {
        Ok(Ok((200, body))) => Some(body),
        _ => None,
    }
}

async fn request(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    // Bounded: the example's answers and /metrics are small.
    (&mut conn).take(4 << 20).read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}
