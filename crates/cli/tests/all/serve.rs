//! `warden serve` through the binary: the bundled example component (friendly and hostile
//! routes), admission, reuse and recycling, quarantine, config errors, the admin endpoints,
//! and SIGTERM's drain. Each test starts its own server on port 0 and reads the addresses it
//! prints; a tiny HTTP/1.1 client over std's TcpStream talks to it.

use crate::common::{
    ENDS_WITHIN, dir, output, run, scratch, signal, spawn, stderr, stdout, until, until_ok,
    wait_exit, warden, write,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The bundled example component, written once per test process.
fn example() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = dir().join("example.wasm");
        let o = output(warden().args(["serve", "--write-example"]).arg(&path));
        assert!(o.status.success(), "--write-example: {}", stderr(&o));
        path.display().to_string()
    })
    .clone()
}

struct Serve {
    child: Child,
    addr: String,
    admin: String,
    stderr: Arc<Mutex<String>>,
    /// Reads stderr into `stderr`; ends at EOF.
    reader: Option<JoinHandle<()>>,
}

impl Serve {
    /// `warden serve` on `config` (None: the built-in example), on port 0.
    fn start(config: Option<&str>) -> Serve {
        let mut cmd = warden();
        cmd.arg("serve");
        if let Some(text) = config {
            let text = text.replace("COMPONENT", &example());
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cmd.arg(write(&format!("serve-{n}.toml"), text));
        }
        cmd.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
        let mut child = spawn(&mut cmd, Stdio::null());
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut addr = None;
        let mut admin = None;
        while addr.is_none() || admin.is_none() {
            match rx.recv_timeout(ENDS_WITHIN) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on http://") {
                        addr = Some(a.to_string());
                    } else if let Some(a) = line.strip_prefix("admin on http://") {
                        admin = Some(a.to_string());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("no addresses printed; stderr:\n{}", stderr.lock().unwrap());
                }
            }
        }
        Serve {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            stderr,
            reader: Some(reader),
        }
    }

    fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path)
    }

    fn admin(&self, method: &str, path: &str) -> Response {
        request(&self.admin, method, path)
    }

    fn metrics(&self) -> String {
        self.admin("GET", "/metrics").body
    }

    /// Polls `/admin/domains` until `done` holds for it.
    fn domains_until(
        &self,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        until_ok(what, || {
            let v: serde_json::Value =
                serde_json::from_str(&self.admin("GET", "/admin/domains").body).unwrap();
            let list = v.as_array().unwrap().clone();
            if done(&list) {
                Ok(list)
            } else {
                Err(format!("{list:?}"))
            }
        })
    }

    /// Polls `/metrics` until it contains `line`.
    fn metrics_until(&self, line: &str) {
        until_ok(line, || {
            let m = self.metrics();
            if m.contains(line) { Ok(()) } else { Err(m) }
        })
    }

    /// Polls `/readyz` until it answers `status`.
    fn readiness_until(&self, status: u16) -> Response {
        until_ok(&format!("/readyz {status}"), || {
            let r = self.admin("GET", "/readyz");
            if r.status == status {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        })
    }

    fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Waits for the exit (killing it and failing if it does not come): its code and all
    /// it wrote to stderr.
    fn wait(mut self) -> (i32, String) {
        let Some(status) = wait_exit(&mut self.child) else {
            panic!("warden serve did not exit");
        };
        // The process is gone, so its stderr is at EOF: the reader has all there was.
        self.reader.take().unwrap().join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), stderr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug)]
struct Response {
    status: u16,
    /// The head, lowercased.
    head: String,
    body: String,
}

/// One request on a connection of its own (`connection: close`).
fn request(addr: &str, method: &str, path: &str) -> Response {
    request_with(addr, method, path, "")
}

/// One request with a body, on a connection of its own (`connection: close`).
fn request_with(addr: &str, method: &str, path: &str, body: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(ENDS_WITHIN)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // The example's responses are not chunked unless streamed; unchunk simply if they are.
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        head: head.to_lowercase(),
        body,
    }
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

const HELLO: &str = "hello from warden\n";

fn config(extra_app: &str, top: &str) -> String {
    format!(
        "{top}\n[[app]]\nname = \"example\"\nroute = \"/\"\ncomponent = \"COMPONENT\"\n\
         grant = \"network\"\ndeadline = \"1s\"\nmax-memory = \"16MiB\"\n{extra_app}\n"
    )
}

#[test]
fn without_config_the_example_serves_and_the_admin_port_answers() {
    let s = Serve::start(None);
    let r = s.get("/hello");
    assert_eq!((r.status, r.body.as_str()), (200, HELLO), "{r:?}");
    assert_eq!(s.get("/").body, HELLO);
    assert_eq!(s.get("/no-such-route").status, 404);
    assert_eq!(s.admin("GET", "/healthz").status, 200);
    let ready = s.admin("GET", "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let m = s.metrics();
    assert!(
        m.contains(r#"warden_requests_total{app="example",outcome="ok"} 3"#),
        "{m}"
    );
    assert!(m.contains("warden_memory_budget_bytes "), "{m}");
    assert!(
        m.contains("# TYPE warden_request_duration_seconds histogram"),
        "{m}"
    );
}

#[test]
fn each_hostile_route_gets_its_status_while_friendly_requests_all_succeed() {
    let s = Arc::new(Serve::start(Some(&config("", ""))));
    let hostile: Vec<_> = [
        ("/loop", &[504][..]),
        ("/sleep", &[504]),
        ("/recurse", &[500]),
        ("/trap", &[500]),
        ("/hog", &[500, 503]),
    ]
    .into_iter()
    .map(|(path, want)| {
        let s = s.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = s.get(path);
            assert!(want.contains(&r.status), "{path}: {r:?}");
            (path, t.elapsed())
        })
    })
    .collect();
    let friendly = {
        let s = s.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                let r = s.get("/hello");
                assert_eq!((r.status, r.body.as_str()), (200, HELLO), "{r:?}");
            }
        })
    };
    friendly.join().unwrap();
    for h in hostile {
        let (path, took) = h.join().unwrap();
        if path == "/loop" || path == "/sleep" {
            assert!(
                took >= Duration::from_millis(950),
                "{path} ended before its 1s deadline: {took:?}"
            );
        }
    }
    let m = s.metrics();
    assert!(
        m.contains(r#"warden_requests_total{app="example",outcome="ok"} 20"#),
        "{m}"
    );
    assert!(
        m.contains(r#"warden_requests_total{app="example",outcome="timeout"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"warden_requests_total{app="example",outcome="trap"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"warden_requests_total{app="example",outcome="stack_overflow"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"warden_escalations_total{failure="deadline""#),
        "{m}"
    );
    assert!(
        m.contains(r#"warden_aborts_total{kind="polite",reason="deadline"}"#),
        "{m}"
    );
    assert_eq!(s.get("/hello").status, 200, "still serving");
}

#[test]
fn a_second_request_beyond_max_in_flight_and_queue_gets_503_with_retry_after() {
    let s = Arc::new(Serve::start(Some(&config(
        "",
        "[admission]\nmax-in-flight = 1\nqueue = 0\nretry-after = \"3s\"",
    ))));
    let slow = {
        let s = s.clone();
        std::thread::spawn(move || s.get("/sleep").status)
    };
    s.metrics_until("warden_in_flight 1");
    let r = s.get("/hello");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.head.contains("retry-after: 3"), "{}", r.head);
    assert_eq!(slow.join().unwrap(), 504);
    s.metrics_until("warden_in_flight 0");
    assert_eq!(s.get("/hello").status, 200, "the place is free again");
    assert!(
        s.metrics()
            .contains(r#"warden_requests_total{app="example",outcome="admission"} 1"#)
    );
}

#[test]
fn with_reuse_a_domain_serves_n_requests_then_a_fresh_one_takes_over() {
    let s = Serve::start(Some(&config("instance-reuse = 3", "")));
    assert_eq!(s.get("/hello").status, 200);
    // A domain is back for reuse once its call has been settled, a moment after the response
    // (a request before that gets a fresh domain).
    s.domains_until("one idle domain that served 1", |d| {
        d.len() == 1 && d[0]["requests"] == 1
    });
    assert_eq!(s.get("/hello").status, 200);
    let two = s.domains_until("one domain that served 2", |d| {
        d.len() == 1 && d[0]["requests"] == 2 && d[0]["busy"] == false
    });
    let first = two[0]["id"].clone();
    assert_eq!(s.get("/hello").status, 200);
    s.domains_until("the domain gone after its third", |d| d.is_empty());
    assert_eq!(s.get("/hello").status, 200);
    let fresh = s.domains_until("a fresh domain", |d| d.len() == 1 && d[0]["requests"] == 1);
    assert_ne!(fresh[0]["id"], first);
    // A failed call's domain is never reused.
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(s.get("/hello").status, 200);
    s.domains_until("no domain that trapped kept", |d| {
        d.iter().all(|x| x["loaded"] == true)
    });
}

#[test]
fn with_reuse_a_domain_above_recycle_memory_is_recycled() {
    let s = Serve::start(Some(&config(
        "instance-reuse = 100\nrecycle-memory = \"1KiB\"",
        "",
    )));
    assert_eq!(s.get("/hello").status, 200);
    s.domains_until("the domain recycled (above 1 KiB)", |d| d.is_empty());
    s.metrics_until("warden_live_domains 0");
}

#[test]
fn an_app_that_keeps_failing_is_quarantined_until_cool_down_or_restore() {
    let s = Serve::start(Some(&config(
        "restart-intensity = { unloads = 1, within = \"30s\" }\ncool-down = \"1500ms\"",
        "",
    )));
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(s.get("/hello").status, 200, "one unload is allowed");
    assert_eq!(s.get("/trap").status, 500);
    let r = s.get("/hello");
    assert_eq!(r.status, 503, "quarantined: {r:?}");
    assert!(r.head.contains("retry-after: "), "{}", r.head);
    assert!(r.body.contains("quarantined"), "{}", r.body);
    assert!(
        s.metrics()
            .contains(r#"warden_app_quarantined{app="example"} 1"#)
    );
    let restored = s.admin("POST", "/admin/apps/example/restore");
    assert_eq!(
        (restored.status, restored.body.as_str()),
        (200, "example: restored\n")
    );
    assert_eq!(s.get("/hello").status, 200);
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(s.get("/trap").status, 500);
    assert_eq!(s.get("/hello").status, 503);
    // The cool-down passing is the thing under test: wait it out.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(s.get("/hello").status, 200, "cooled down");
}

/// `warden serve CONFIG`, expected to refuse it: (code, stderr, stdout).
fn refused(text: &str) -> (i32, String, String) {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = write(
        &format!("bad-{n}.toml"),
        text.replace("COMPONENT", &example()),
    );
    let out = run(&["serve", &path]);
    (out.status.code().unwrap_or(-1), stderr(&out), stdout(&out))
}

#[test]
fn bad_configs_are_refused_naming_the_key_with_exit_code_4_before_listening() {
    let app =
        "[[app]]\nname = \"a\"\nroute = \"/\"\ncomponent = \"COMPONENT\"\ngrant = \"network\"\n";
    let ungranted = "[[app]]\nname = \"a\"\nroute = \"/\"\ncomponent = \"COMPONENT\"\n";
    let core = write("core.wat", "(module (func (export \"f\")))");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        (
            format!("lisen = \"127.0.0.1:0\"\n{app}"),
            "unknown field `lisen`",
        ),
        (
            format!("{app}max-memory = \"8XB\"\n"),
            "app \"a\".max-memory",
        ),
        (format!("{app}deadline = \"soon\"\n"), "app \"a\".deadline"),
        (
            format!("{ungranted}grant = \"safe,sockets\"\n"),
            "app \"a\".grant: `safe,sockets`: unknown capability `sockets`",
        ),
        // The example's outbound route imports wasi:http/outgoing-handler: `network`, which
        // an app's default (`safe`) does not include.
        (ungranted.to_string(), "app \"a\".grant: "),
        (
            ungranted.to_string(),
            "`wasi:http/outgoing-handler@0.2.12` (network)",
        ),
        (
            format!("drain = \"1h\"\n{app}"),
            "drain: 1h is not below the policy's process-exit bound",
        ),
        (
            "[[app]]\nname = \"a\"\nroute = \"/\"\ncomponent = \"missing.wasm\"\n".to_string(),
            "app \"a\".component: cannot read",
        ),
        (
            format!("[[app]]\nname = \"a\"\nroute = \"/\"\ncomponent = \"{core}\"\n"),
            "is not a wasi:http/proxy component",
        ),
        (
            format!("{app}[[app]]\nname = \"b\"\nroute = \"/\"\ncomponent = \"COMPONENT\"\n"),
            "app \"b\".route",
        ),
        (
            format!("listen = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:0\"\n{app}"),
            "listen: cannot listen on",
        ),
    ];
    for (text, says) in cases {
        let (code, stderr, stdout) = refused(&text);
        assert_eq!(code, 4, "{says}: {stderr}");
        assert!(stderr.contains(says), "expected `{says}` in: {stderr}");
        assert!(!stdout.contains("listening"), "nothing listens: {stdout}");
    }
    drop(taken);
}

#[test]
fn sigterm_drains_the_request_in_flight_refuses_new_connections_then_exits_0() {
    let s = Arc::new(Serve::start(Some(&config("", "drain = \"10s\""))));
    assert_eq!(s.get("/hello").status, 200);
    let slow = {
        let s = s.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            (s.get("/sleep"), t.elapsed())
        })
    };
    // The /hello's place may be held a moment after its answer (until its call is settled),
    // so `warden_in_flight 1` could be it: wait for the /sleep call itself.
    s.domains_until("the /sleep call running", |d| {
        d.iter().any(|x| x["busy"] == true)
    });
    s.signal("TERM");
    // Readiness turns off at once; the admin port answers through the drain.
    assert_eq!(s.readiness_until(503).body, "draining\n");
    assert!(
        TcpStream::connect(&s.addr).is_err(),
        "new connections are refused"
    );
    let (r, took) = slow.join().unwrap();
    assert_eq!(
        r.status, 504,
        "the request in flight was answered, at its deadline: {r:?}"
    );
    assert!(took >= Duration::from_millis(950), "{took:?}");
    let s = Arc::into_inner(s).unwrap();
    let (code, stderr) = s.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once_with_118() {
    let s = Arc::new(Serve::start(Some(
        &config("deadline = \"30s\"", "drain = \"20s\"").replace("deadline = \"1s\"\n", ""),
    )));
    let slow = {
        let addr = s.addr.clone();
        std::thread::spawn(move || {
            let mut c = TcpStream::connect(&addr).unwrap();
            write!(c, "GET /sleep HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf);
        })
    };
    s.metrics_until("warden_in_flight 1");
    s.signal("TERM");
    s.readiness_until(503);
    let t = Instant::now();
    s.signal("INT");
    let s = Arc::into_inner(s).expect("one owner");
    let (code, stderr) = s.wait();
    assert_eq!(code, 118, "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "not after the drain bound"
    );
    slow.join().unwrap();
}

#[test]
fn outbound_requests_reach_only_the_hosts_an_app_lists() {
    let s = Serve::start(Some(&config(
        "allowed-outbound-hosts = [\"127.0.0.1\"]",
        "",
    )));
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    // Listed: the guest fetches this server's own `/` and answers with its status.
    let allowed = s.get(&format!("/fetch/127.0.0.1:{port}"));
    assert_eq!(
        (allowed.status, allowed.body.as_str()),
        (200, "fetched\n"),
        "{allowed:?}"
    );
    // The same server under a name that is not listed: denied before any connection.
    let denied = s.get(&format!("/fetch/localhost:{port}"));
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (502, "denied\n"),
        "{denied:?}"
    );
    // Without the key, nothing is reachable.
    let closed = Serve::start(Some(&config("", "")));
    let denied = closed.get(&format!("/fetch/127.0.0.1:{port}"));
    assert_eq!(denied.status, 502, "{denied:?}");
    assert_eq!(denied.body, "denied\n");
}

#[test]
fn a_client_that_disconnects_before_its_response_aborts_its_call() {
    let s = Serve::start(Some(
        &config("", "").replace("deadline = \"1s\"", "deadline = \"60s\""),
    ));
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    write!(
        conn,
        "GET /loop HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n\r\n",
        s.addr
    )
    .unwrap();
    s.domains_until("the runaway running", |d| {
        d.len() == 1 && d[0]["busy"] == true
    });
    drop(conn);
    // Well before its 60 s deadline: the call is aborted and its domain goes.
    s.domains_until("the runaway's domain gone", |d| d.is_empty());
    // Aborted by the server (the embedder), not ended by its deadline.
    s.metrics_until("warden_aborts_total{kind=\"polite\",reason=\"embedder\"} 1");
    s.metrics_until("warden_requests_total{app=\"example\",outcome=\"client_gone\"} 1");
    // The server goes on.
    assert_eq!(s.get("/hello").status, 200);
}

#[test]
fn a_disable_runtime_action_turns_readiness_off() {
    let policy = write(
        "serve-disable.toml",
        "[failures]\nguest-trap = \"disable-runtime\"\n",
    );
    let s = Serve::start(Some(&config("", &format!("policy = {policy:?}"))));
    assert_eq!(s.admin("GET", "/readyz").status, 200);
    assert_eq!(s.get("/trap").status, 500);
    let ready = s.readiness_until(503);
    assert!(ready.body.contains("disabled"), "{ready:?}");
    // Alive all the same (a load balancer stops sending; the orchestrator does not kill it).
    assert_eq!(s.admin("GET", "/healthz").status, 200);
}

/// The example component answering `hello` with `hello_line` (18 bytes, as the original), its
/// `/sleep` shortened to `sleep_ms`.
fn example_saying(hello_line: &str, sleep_ms: u64) -> Vec<u8> {
    assert_eq!(hello_line.len(), HELLO.len());
    let wat = warden::http::example::WAT
        .replace(r"hello from warden\n", &hello_line.replace('\n', r"\n"))
        .replace(
            "(i64.const 3600000000000)",
            &format!("(i64.const {})", sleep_ms * 1_000_000),
        );
    warden::http::example::build(warden::http::example::WIT, "proxy", &wat).unwrap()
}

const V2: &str = "hello from v2.0!!\n";

/// A module store holding `hello` 1.0 (the example) and 2.0 (answering [`V2`]), both with a
/// 1 s `/sleep`, and a broken 3.0; the config serving `hello@1.0` from it.
fn store_config(test: &str, extra_app: &str) -> String {
    let store = scratch(&format!("store-{test}"));
    std::fs::create_dir(store.join("hello")).unwrap();
    std::fs::write(store.join("hello/1.0.wasm"), example_saying(HELLO, 1000)).unwrap();
    std::fs::write(store.join("hello/2.0.wasm"), example_saying(V2, 1000)).unwrap();
    std::fs::write(store.join("hello/3.0.wasm"), "not a component").unwrap();
    format!(
        "[store]\ndir = \"{}\"\ncache = \"{}\"\n[[app]]\nname = \"hello\"\nroute = \"/\"\n\
         module = \"hello@1.0\"\ndeadline = \"10s\"\ngrant = \"network\"\n{extra_app}\n",
        store.display(),
        dir().join(format!("cache-{test}")).display()
    )
}

#[test]
fn an_app_replaced_under_load_drops_no_request_and_the_old_version_drains() {
    let s = Serve::start(Some(&store_config("replace", "instance-reuse = 1000")));
    assert_eq!(s.get("/hello").body, HELLO);
    // A request in flight on 1.0 across the switch (its /sleep takes 1 s).
    let slow = {
        let addr = s.addr.clone();
        std::thread::spawn(move || request(&addr, "GET", "/sleep"))
    };
    s.domains_until("the /sleep call in flight", |d| {
        d.iter().any(|x| x["busy"] == true)
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // A concurrent loop: every request's start and end, status and body.
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop, answered) = (s.addr.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = Instant::now();
                    let r = request(&addr, "GET", "/hello");
                    seen.push((at, Instant::now(), r.status, r.body));
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    let answers_reach = |n: usize| {
        until(&format!("{n} answers"), || {
            answered.load(std::sync::atomic::Ordering::Relaxed) >= n
        })
    };
    answers_reach(6);
    let asked = Instant::now();
    let switch = request_with(&s.admin, "POST", "/admin/apps/hello/version", "2.0");
    let switched = Instant::now();
    assert_eq!(switch.status, 200, "{}", switch.body);
    assert!(switch.body.contains("2.0 (was 1.0)"), "{}", switch.body);
    answers_reach(answered.load(std::sync::atomic::Ordering::Relaxed) + 9);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    for (at, done, status, body) in &seen {
        assert_eq!(*status, 200, "a request was dropped: {body}");
        assert!(body == HELLO || body == V2, "{body:?}");
        if *at > switched {
            assert_eq!(body, V2, "a request after the switch got the old version");
        }
        if *done < asked {
            assert_eq!(body, HELLO, "2.0 answered before the switch was asked for");
        }
    }
    assert!(seen.iter().any(|x| x.3 == HELLO), "1.0 answered before");
    assert!(
        seen.iter().filter(|x| x.0 > switched).count() >= 3,
        "requests after the switch"
    );
    // The request in flight finished on the old version.
    let slow = slow.join().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, HELLO));
    // Only 2.0's domains remain: 1.0's idle ones were unloaded at the switch, its busy one
    // when its call ended.
    s.domains_until("only version 2.0's domains", |d| {
        !d.is_empty() && d.iter().all(|x| x["version"] == "2.0")
    });
    let apps: serde_json::Value =
        serde_json::from_str(&s.admin("GET", "/admin/apps").body).unwrap();
    assert_eq!(apps[0]["version"], "2.0");
    assert_eq!(s.get("/hello").body, V2);
}

#[test]
fn a_version_switch_that_cannot_be_made_is_refused_and_the_app_keeps_serving() {
    let s = Serve::start(Some(&store_config("refusals", "")));
    let post = |app: &str, body: &str| {
        request_with(
            &s.admin,
            "POST",
            &format!("/admin/apps/{app}/version"),
            body,
        )
    };
    let r = post("hello", "9.9");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.body.contains("`9.9`") && r.body.contains("1.0, 2.0, 3.0"),
        "{}",
        r.body
    );
    let r = post("hello", "../../etc");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid version"), "{}", r.body);
    let r = post("hello", "3.0");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("invalid module"), "{}", r.body);
    assert_eq!(post("nope", "1.0").status, 404);
    assert_eq!(s.admin("GET", "/admin/apps/hello/version").status, 405);
    assert_eq!(s.get("/hello").body, HELLO, "still 1.0");
    // An empty body is the latest version that loads... the latest is 3.0, which does not.
    assert_eq!(post("hello", "").status, 422);
    assert_eq!(post("hello", "2.0").status, 200);
    assert_eq!(s.get("/hello").body, V2);
    // A version that imports what the app's grant does not allow (the environment) is
    // refused when switched to, naming the import and its category; 2.0 keeps serving.
    let wit = warden::http::example::WIT.replace(
        "export wasi:http/incoming-handler@0.2.12;",
        "import wasi:cli/environment@0.2.12;\n  export wasi:http/incoming-handler@0.2.12;",
    );
    let wat = warden::http::example::WAT.replacen(
        "(module",
        "(module\n  (import \"wasi:cli/environment@0.2.12\" \"get-arguments\" (func (param i32)))",
        1,
    );
    let nosy = warden::http::example::build(&wit, "proxy", &wat).unwrap();
    let store = dir().join("store-refusals");
    std::fs::write(store.join("hello/4.0.wasm"), nosy).unwrap();
    let r = post("hello", "4.0");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("wasi:cli/environment") && r.body.contains("environment"),
        "{}",
        r.body
    );
    assert_eq!(s.get("/hello").body, V2, "still 2.0");

    // An app served from a component file cannot be switched.
    let f = Serve::start(Some(&config("", "")));
    let r = request_with(&f.admin, "POST", "/admin/apps/example/version", "1.0");
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn bad_store_settings_are_refused_naming_the_key_with_exit_code_4() {
    let good = store_config("bad-settings", "");
    for (text, key) in [
        (
            good.replace("hello@1.0", "nobody@1.0"),
            "app \"hello\".module",
        ),
        (good.replace("hello@1.0", "hello@7"), "app \"hello\".module"),
        (
            good.replace("hello@1.0", "hello@3.0"),
            "app \"hello\".module",
        ),
        (
            good.replace("hello@1.0", "../hello"),
            "app \"hello\".module",
        ),
        (
            good.replace("store-bad-settings", "store-missing"),
            "store.dir",
        ),
        // No [store] at all.
        (
            good[good.find("[[app]]").unwrap()..].to_string(),
            "app \"hello\".module",
        ),
    ] {
        let (code, stderr, stdout) = refused(&text);
        assert_eq!(code, 4, "{key}: {stderr}");
        assert!(stderr.contains(&format!(": {key}: ")), "{key}: {stderr}");
        assert!(!stdout.contains("listening"), "{stdout}");
    }
}

#[test]
fn a_tampered_precompiled_artifact_is_recompiled_and_counted() {
    let cfg = store_config("tampered", "");
    let cache = dir().join("cache-tampered");
    let _ = std::fs::remove_dir_all(&cache);
    {
        let s = Serve::start(Some(&cfg));
        assert_eq!(s.get("/hello").body, HELLO);
    }
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let mut bytes = std::fs::read(&artifacts[0]).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&artifacts[0], bytes).unwrap();

    let s = Serve::start(Some(&cfg));
    assert_eq!(s.get("/hello").body, HELLO, "recompiled, and serving");
    s.metrics_until("warden_artifacts_rejected_total{reason=\"corrupt\"} 1");
    drop(s);
    // Rewritten: a third start trusts it.
    let s = Serve::start(Some(&cfg));
    assert_eq!(s.get("/hello").body, HELLO);
    assert!(
        !s.metrics().contains("warden_artifacts_rejected_total{"),
        "{}",
        s.metrics()
    );
}
