//! The request path over TCP with a fake handler: routing, statuses, admission, quarantine,
//! readiness, metrics and drain, no guest needed.

use super::admission::{Admission, Place};
use super::config::{AppConfig, ComponentSource, Intensity};
use super::metrics::Metrics;
use super::server::{
    App, Body, Drained, Failure, Handler, Server, serve_admin, serve_requests, text,
};
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden::Outcome;

struct Fake;

impl Handler for Fake {
    async fn handle(
        &self,
        app: Arc<App>,
        request: Request<Body>,
        place: Place,
    ) -> Result<Response<Body>, Failure> {
        let _place = place;
        let path = request.uri().path().to_string();
        match path
            .trim_start_matches(&*app.config.route)
            .trim_start_matches('/')
        {
            "slow" => {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(text(StatusCode::OK, "slow done\n".into()))
            }
            "crash" => {
                app.quarantine.record_unload(std::time::Instant::now());
                Err(Failure::Call(
                    Outcome::Trap,
                    "wasm trap: unreachable".into(),
                ))
            }
            "timeout" => Err(Failure::Call(Outcome::Timeout, "deadline".into())),
            "guest-error" => Err(Failure::Guest("HttpRequestDenied".into())),
            "none" => Err(Failure::NoResponse),
            _ => Ok(text(
                StatusCode::OK,
                format!("{} saw {path}\n", app.config.name),
            )),
        }
    }

    fn domains(&self) -> serde_json::Value {
        serde_json::json!([])
    }
}

fn app(name: &str, route: &str) -> AppConfig {
    AppConfig {
        name: name.into(),
        route: route.into(),
        component: ComponentSource::Example,
        deadline: None,
        max_memory: 1 << 20,
        reserve: None,
        instance_reuse: 1,
        recycle_memory: None,
        restart_intensity: Intensity {
            unloads: 1,
            within: Duration::from_secs(60),
        },
        cool_down: Duration::from_millis(600),
        allowed_outbound_hosts: vec![],
        grant: warden::Grant::UNSAFE,
    }
}

struct Running {
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Drained>,
    server: Arc<Server<Fake>>,
}

async fn start(max_in_flight: usize, queue: usize, drain: Duration) -> Running {
    let runtime = warden::Runtime::new(warden::RuntimeConfig::default()).unwrap();
    let apps = vec![
        Arc::new(App::new(app("root", "/"))),
        Arc::new(App::new(app("api", "/api"))),
    ];
    let server = Server::new(
        Fake,
        apps,
        Admission::new(max_in_flight, queue),
        Duration::from_millis(1500),
        Arc::new(Metrics::new()),
        runtime,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    tokio::spawn(serve_admin(server.clone(), admin));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = tokio::spawn(serve_requests(
        server.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
        drain,
    ));
    Running {
        addr,
        admin: admin_addr,
        stop: Some(tx),
        done,
        server,
    }
}

/// (status, headers as lowercase text, body) of one request on a new connection.
async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

#[tokio::test]
async fn routes_by_longest_prefix_and_maps_failures_to_statuses() {
    let r = start(8, 8, Duration::from_secs(5)).await;
    let (s, _, body) = get(r.addr, "GET", "/hello").await;
    assert_eq!((s, body.as_str()), (200, "root saw /hello\n"));
    let (s, _, body) = get(r.addr, "GET", "/api/x").await;
    assert_eq!((s, body.as_str()), (200, "api saw /api/x\n"));
    let (_, _, body) = get(r.addr, "GET", "/apix").await;
    assert_eq!(body, "root saw /apix\n", "/api does not serve /apix");
    assert_eq!(get(r.addr, "GET", "/api/timeout").await.0, 504);
    assert_eq!(get(r.addr, "GET", "/api/guest-error").await.0, 502);
    assert_eq!(get(r.addr, "GET", "/api/none").await.0, 500);
    let (s, _, body) = get(r.addr, "GET", "/api/crash").await;
    assert_eq!(s, 500);
    assert!(body.contains("trap"), "{body}");
}

#[test]
fn each_failure_has_its_status() {
    use Outcome::*;
    let status = |o| Failure::Call(o, String::new()).status().as_u16();
    assert_eq!(status(Timeout), 504);
    for o in [InsufficientMemory, ProcessExiting, RuntimeDisabled] {
        assert_eq!(status(o), 503, "{o}");
    }
    for o in [
        Trap,
        StackOverflow,
        OutOfMemory,
        Aborted,
        RudeAborted,
        DomainUnloaded,
    ] {
        assert_eq!(status(o), 500, "{o}");
    }
    assert_eq!(Failure::NoResponse.status().as_u16(), 500);
    assert_eq!(Failure::Guest("x".into()).status().as_u16(), 502);
    assert_eq!(Failure::Unavailable("x".into()).status().as_u16(), 503);
}

#[tokio::test]
async fn a_full_admission_queue_answers_503_with_retry_after() {
    let r = start(1, 0, Duration::from_secs(5)).await;
    let slow = tokio::spawn(get(r.addr, "GET", "/slow"));
    while r.server.admission.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (s, head, _) = get(r.addr, "GET", "/hello").await;
    assert_eq!(s, 503);
    assert!(head.contains("retry-after: 2"), "1.5 s rounds up: {head}");
    assert_eq!(slow.await.unwrap().0, 200);
    assert_eq!(
        get(r.addr, "GET", "/hello").await.0,
        200,
        "the place is free again"
    );
    let (_, _, metrics) = get(r.admin, "GET", "/metrics").await;
    assert!(
        metrics.contains(r#"warden_requests_total{app="root",outcome="admission"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_app_past_its_intensity_is_quarantined_until_cool_down_or_restore() {
    let r = start(8, 8, Duration::from_secs(5)).await;
    assert_eq!(get(r.addr, "GET", "/api/crash").await.0, 500);
    assert_eq!(
        get(r.addr, "GET", "/api/crash").await.0,
        500,
        "the second of 1 allowed"
    );
    let (s, head, _) = get(r.addr, "GET", "/api/fine").await;
    assert_eq!(s, 503);
    assert!(head.contains("retry-after: 1"), "{head}");
    assert_eq!(
        get(r.addr, "GET", "/fine").await.0,
        200,
        "other apps are served"
    );
    let (_, _, metrics) = get(r.admin, "GET", "/metrics").await;
    assert!(
        metrics.contains(r#"warden_app_quarantined{app="api"} 1"#),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(r.addr, "GET", "/api/fine").await.0, 200, "cooled down");
    get(r.addr, "GET", "/api/crash").await;
    get(r.addr, "GET", "/api/crash").await;
    assert_eq!(get(r.addr, "GET", "/api/fine").await.0, 503);
    let (s, _, body) = get(r.admin, "POST", "/admin/apps/api/restore").await;
    assert_eq!((s, body.as_str()), (200, "api: restored\n"));
    assert_eq!(get(r.addr, "GET", "/api/fine").await.0, 200, "restored");
    assert_eq!(
        get(r.admin, "POST", "/admin/apps/nope/restore").await.0,
        404
    );
    assert_eq!(get(r.admin, "GET", "/admin/apps/api/restore").await.0, 405);
}

#[tokio::test]
async fn drain_finishes_the_request_in_flight_refuses_new_ones_and_turns_readiness_off() {
    let mut r = start(8, 8, Duration::from_secs(5)).await;
    assert_eq!(get(r.admin, "GET", "/readyz").await.0, 200);
    assert_eq!(get(r.admin, "GET", "/healthz").await.0, 200);
    // An idle keep-alive connection must not hold the drain up.
    let mut idle = TcpStream::connect(r.addr).await.unwrap();
    idle.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = idle.read(&mut buf).await.unwrap();
    let slow = tokio::spawn(get(r.addr, "GET", "/slow"));
    while r.server.admission.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    r.stop.take().unwrap().send(()).unwrap();
    let (s, _, body) = slow.await.unwrap();
    assert_eq!(
        (s, body.as_str()),
        (200, "slow done\n"),
        "the request in flight completes"
    );
    assert_eq!(r.done.await.unwrap(), Drained::InTime);
    assert!(
        TcpStream::connect(r.addr).await.is_err(),
        "new connections are refused"
    );
    let (s, _, body) = get(r.admin, "GET", "/readyz").await;
    assert_eq!((s, body.as_str()), (503, "draining\n"));
    assert_eq!(
        idle.read(&mut buf).await.unwrap(),
        0,
        "the idle connection was closed"
    );
}

#[tokio::test]
async fn a_drain_past_its_bound_says_so() {
    let mut r = start(8, 8, Duration::from_millis(50)).await;
    let slow = tokio::spawn(get(r.addr, "GET", "/slow"));
    while r.server.admission.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    r.stop.take().unwrap().send(()).unwrap();
    assert_eq!(r.done.await.unwrap(), Drained::CutOff(1));
    slow.abort();
}
