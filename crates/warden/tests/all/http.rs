//! `wasi:http/proxy` components through `Domain::call_http`, with the bundled example
//! (`warden::http::example`) and real hyper requests: each route's outcome, containment of
//! the hostile ones beside friendly traffic, reuse, outbound policy, and the refusals.

use crate::common;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use warden::http::{HttpError, HyperOutgoingBody, body_from_bytes, example};
use warden::{CallError, CallOptions, Domain, DomainConfig, Error, HttpConfig, Module, Runtime};

fn request(path: &str) -> hyper::Request<warden::http::HyperIncomingBody> {
    hyper::Request::builder()
        .uri(format!("http://localhost{path}"))
        .body(body_from_bytes(Bytes::new()))
        .unwrap()
}

fn example_module(rt: &Runtime) -> Module {
    let module = rt.load_module(&example::component_bytes()).unwrap();
    assert!(module.is_component());
    assert!(module.is_http_proxy());
    module
}

async fn example_domain(config: DomainConfig) -> (Runtime, common::Recorder, Domain) {
    let (rt, rec) = common::runtime();
    let module = example_module(&rt);
    let domain = rt.create_domain(&module, config).await.unwrap();
    (rt, rec, domain)
}

async fn text(response: hyper::Response<HyperOutgoingBody>) -> String {
    let body = tokio::time::timeout(common::ENDS_WITHIN, response.into_body().collect())
        .await
        .expect("the body ends")
        .expect("the body streams without error");
    String::from_utf8(body.to_bytes().to_vec()).unwrap()
}

/// The response to `path` on `domain` under `options`, bounded.
async fn serve(
    domain: &Domain,
    path: &str,
    options: CallOptions,
) -> Result<hyper::Response<HyperOutgoingBody>, HttpError> {
    let mut call = domain.call_http(request(path), options).unwrap();
    tokio::time::timeout(common::ENDS_WITHIN, call.response())
        .await
        .expect("the call answers")
}

fn deadline(ms: u64) -> CallOptions {
    CallOptions {
        deadline: Some(Duration::from_millis(ms)),
        ..CallOptions::default()
    }
}

async fn unloaded(domain: &Domain) {
    tokio::time::timeout(common::ENDS_WITHIN, domain.unloaded())
        .await
        .expect("the domain is unloaded");
    assert!(!domain.is_loaded());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hello_route_answers_200_and_its_body() {
    let (_rt, rec, domain) = example_domain(DomainConfig::default()).await;
    for path in ["/", "/hello", "/hello?x=1"] {
        let mut call = domain
            .call_http(request(path), CallOptions::default())
            .unwrap();
        let id = call.id();
        let response = call.response().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(text(response).await, "hello from warden\n", "{path}");
        let out = call.into_handle().join().await;
        assert!(out.is_ok(), "{path}: {out:?}");
        let finished = rec.named("call_finished");
        let this = finished
            .iter()
            .find(|e| e["call"] == id.0)
            .unwrap_or_else(|| panic!("a call_finished for {id}: {finished:?}"));
        assert_eq!(this["outcome"], "ok");
    }
    let response = serve(&domain, "/nothing-here", CallOptions::default())
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(text(response).await, "not found\n");
    assert!(
        domain.is_loaded(),
        "friendly requests leave the domain loaded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_echo_route_streams_the_request_body_back() {
    let (_rt, _rec, domain) = example_domain(DomainConfig::default()).await;
    // Larger than one read (4 KiB) and one write, so it takes several rounds.
    let sent: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://localhost/echo")
        .body(body_from_bytes(sent.clone()))
        .unwrap();
    let mut call = domain.call_http(req, CallOptions::default()).unwrap();
    let response = call.response().await.unwrap();
    assert_eq!(response.status(), 200);
    let got = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the body comes back unchanged");
    assert!(call.into_handle().join().await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_writing_to_a_client_that_never_reads_ends_at_its_deadline() {
    let (_rt, rec, domain) = example_domain(DomainConfig::default()).await;
    // Far more than the response body's buffer: once it is full the guest's write blocks in
    // the host, and nobody reads the body.
    let sent = vec![7u8; 64 << 20];
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://localhost/echo")
        .body(body_from_bytes(sent))
        .unwrap();
    let started = Instant::now();
    let mut call = domain.call_http(req, deadline(300)).unwrap();
    let response = call.response().await.unwrap();
    assert_eq!(response.status(), 200);
    // The response is held, its body never polled: the handler must still end.
    let out = call.into_handle().join().await;
    assert!(matches!(out, Err(CallError::Timeout)), "{out:?}");
    assert!(started.elapsed() < common::ENDS_WITHIN);
    drop(response);
    unloaded(&domain).await;
    assert!(
        rec.named("call_finished")
            .iter()
            .any(|e| e["outcome"] == "timeout")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_ends_at_its_deadline_and_its_domain_is_unloaded() {
    let (_rt, rec, domain) = example_domain(DomainConfig::default()).await;
    let started = Instant::now();
    let err = serve(&domain, "/loop", deadline(300)).await.unwrap_err();
    assert!(
        matches!(err, HttpError::Call(CallError::Timeout)),
        "{err:?}"
    );
    assert!(started.elapsed() < common::ENDS_WITHIN);
    unloaded(&domain).await;
    assert!(
        rec.named("call_finished")
            .iter()
            .any(|e| e["outcome"] == "timeout")
    );
    // A later request is refused by the unloaded domain, as every call is.
    let err = serve(&domain, "/hello", CallOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::Call(CallError::DomainUnloaded)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hog_is_out_of_memory_under_its_limit() {
    let config = DomainConfig {
        max_memory: 8 << 20,
        ..DomainConfig::default()
    };
    let (_rt, _rec, domain) = example_domain(config).await;
    let err = serve(&domain, "/hog", deadline(10_000)).await.unwrap_err();
    assert!(
        matches!(err, HttpError::Call(CallError::OutOfMemory { .. })),
        "{err:?}"
    );
    unloaded(&domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hog_with_a_reservation_the_budget_cannot_give_is_insufficient_memory() {
    let (rt, _rec, domain) = example_domain(DomainConfig::default()).await;
    let options = CallOptions {
        reserve: Some(rt.memory().limit * 2),
        ..deadline(10_000)
    };
    let err = serve(&domain, "/hog", options).await.unwrap_err();
    assert!(
        matches!(err, HttpError::Call(CallError::InsufficientMemory { .. })),
        "{err:?}"
    );
    // Refused before any guest code ran: the domain still serves.
    let response = serve(&domain, "/hello", CallOptions::default())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_a_stack_overflow() {
    let (_rt, _rec, domain) = example_domain(DomainConfig::default()).await;
    let err = serve(&domain, "/recurse", deadline(10_000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::Call(CallError::StackOverflow { .. })),
        "{err:?}"
    );
    unloaded(&domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_trap() {
    let (_rt, _rec, domain) = example_domain(DomainConfig::default()).await;
    let err = serve(&domain, "/trap", deadline(10_000)).await.unwrap_err();
    match err {
        HttpError::Call(CallError::Trap { message, .. }) => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    unloaded(&domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_blocked_in_a_host_call_ends_at_its_deadline() {
    let (_rt, _rec, domain) = example_domain(DomainConfig::default()).await;
    let started = Instant::now();
    let err = serve(&domain, "/sleep", deadline(300)).await.unwrap_err();
    assert!(
        matches!(err, HttpError::Call(CallError::Timeout)),
        "{err:?}"
    );
    // Its wait was one hour.
    assert!(started.elapsed() < common::ENDS_WITHIN);
    unloaded(&domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_blocked_in_a_host_call_ends_when_aborted() {
    let (_rt, rec, domain) = example_domain(DomainConfig::default()).await;
    let mut call = domain
        .call_http(request("/sleep"), CallOptions::default())
        .unwrap();
    common::wait_until("the handler runs", || {
        !rec.named("call_started").is_empty() && domain.is_busy()
    })
    .await;
    call.abort();
    let err = tokio::time::timeout(common::ENDS_WITHIN, call.response())
        .await
        .expect("the aborted call answers")
        .unwrap_err();
    assert!(
        matches!(err, HttpError::Call(CallError::Aborted)),
        "{err:?}"
    );
    let outcome = call.into_handle().join().await;
    assert_eq!(outcome.unwrap_err(), CallError::Aborted);
    unloaded(&domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_the_client_never_sends_ends_at_the_deadline() {
    let (_rt, _rec, domain) = example_domain(DomainConfig::default()).await;
    // A body that never yields: the echo handler waits in `blocking-read`.
    let body = Never.boxed_unsync();
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://localhost/echo")
        .body(body)
        .unwrap();
    let mut call = domain.call_http(req, deadline(300)).unwrap();
    // The echo handler answers at once, then streams: the response is there, its body is not.
    let response = tokio::time::timeout(common::ENDS_WITHIN, call.response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let outcome = tokio::time::timeout(common::ENDS_WITHIN, call.into_handle().join())
        .await
        .expect("the call ends");
    assert_eq!(outcome.unwrap_err(), CallError::Timeout);
    // The body ends (with an error: the handler never finished it) once the domain is gone.
    unloaded(&domain).await;
    let body = tokio::time::timeout(common::ENDS_WITHIN, response.into_body().collect())
        .await
        .expect("the body ends");
    assert!(body.is_err(), "an unfinished body is no complete response");
}

/// A request body whose client never sends a byte.
struct Never;

impl http_body::Body for Never {
    type Data = Bytes;
    type Error = warden::http::BodyError;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn friendly_requests_all_succeed_beside_hostile_ones() {
    let (rt, _rec) = common::runtime();
    let module = example_module(&rt);
    let config = DomainConfig {
        max_memory: 8 << 20,
        ..DomainConfig::default()
    };
    let mut hostile = Vec::new();
    for path in ["/loop", "/sleep", "/recurse", "/hog"] {
        let domain = rt.create_domain(&module, config.clone()).await.unwrap();
        let call = domain.call_http(request(path), deadline(2_000)).unwrap();
        hostile.push((path, domain, call));
    }
    let mut friendly = Vec::new();
    for _ in 0..16 {
        let rt = rt.clone();
        let module = module.clone();
        let config = config.clone();
        friendly.push(tokio::spawn(async move {
            let domain = rt.create_domain(&module, config).await.unwrap();
            let response = serve(&domain, "/hello", deadline(20_000)).await.unwrap();
            (response.status(), text(response).await)
        }));
    }
    for f in friendly {
        let (status, body) = f.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "hello from warden\n");
    }
    for (path, domain, mut call) in hostile {
        let err = tokio::time::timeout(common::ENDS_WITHIN, call.response())
            .await
            .unwrap_or_else(|_| panic!("{path} ends"))
            .unwrap_err();
        let expected = match &err {
            HttpError::Call(CallError::Timeout) => ["/loop", "/sleep"].contains(&path),
            HttpError::Call(CallError::StackOverflow { .. }) => path == "/recurse",
            HttpError::Call(CallError::OutOfMemory { .. }) => path == "/hog",
            _ => false,
        };
        assert!(expected, "{path}: {err:?}");
        unloaded(&domain).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_serves_many_requests_and_a_failed_one_is_unloaded() {
    let (_rt, rec, domain) = example_domain(DomainConfig::default()).await;
    let id = domain.id();
    let mut memory = Vec::new();
    for _ in 0..20 {
        let mut call = domain
            .call_http(request("/hello"), CallOptions::default())
            .unwrap();
        let response = call.response().await.unwrap();
        assert_eq!(text(response).await, "hello from warden\n");
        // The response comes before the handler returns: wait for its end.
        assert!(call.into_handle().join().await.is_ok());
        memory.push(domain.memory_used());
    }
    // The same domain (and instance) served them all, and did not grow.
    let ok: Vec<_> = rec
        .named("call_finished")
        .into_iter()
        .filter(|e| e["outcome"] == "ok")
        .collect();
    assert_eq!(ok.len(), 20);
    assert!(
        ok.iter()
            .all(|e| e["domain"] == rec.named("domain_loaded")[0]["domain"])
    );
    assert_eq!(rec.named("domain_loaded").len(), 1);
    assert_eq!(domain.id(), id);
    assert!(memory.windows(2).all(|w| w[0] == w[1]), "{memory:?}");
    assert!(domain.is_loaded());
    // A failed request ends it: a trapped instance cannot be entered again.
    let err = serve(&domain, "/trap", CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Call(CallError::Trap { .. })));
    unloaded(&domain).await;
}

/// A loopback HTTP server answering every request with 201 `upstream`; its address.
async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let body = http_body_util::Full::new(Bytes::from_static(b"upstream"));
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder().status(201).body(body).unwrap(),
                    )
                });
                let io = wasmtime_wasi_http::io::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_requests_are_denied_unless_their_host_is_listed() {
    let addr = upstream().await;
    let path = format!("/fetch/{addr}");
    // Denied by default: the guest is told `HTTP-request-denied`.
    let (_rt, _rec, denied) = example_domain(DomainConfig::default()).await;
    let response = serve(&denied, &path, deadline(20_000)).await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(text(response).await, "denied\n");
    // Another host listed: still denied.
    let other = DomainConfig {
        http: HttpConfig {
            allowed_outbound_hosts: vec![
                "example.com".into(),
                format!("127.0.0.1:{}", addr.port() + 1),
            ],
        },
        ..DomainConfig::default()
    };
    let (_rt, _rec, denied) = example_domain(other).await;
    let response = serve(&denied, &path, deadline(20_000)).await.unwrap();
    assert_eq!(text(response).await, "denied\n");
    // Listed (by host, and by host and port): the request reaches the upstream server.
    for allowed in ["127.0.0.1".to_string(), addr.to_string(), "*".to_string()] {
        let config = DomainConfig {
            http: HttpConfig {
                allowed_outbound_hosts: vec![allowed.clone()],
            },
            ..DomainConfig::default()
        };
        let (_rt, _rec, domain) = example_domain(config).await;
        let response = serve(&domain, &path, deadline(20_000)).await.unwrap();
        assert_eq!(response.status(), 201, "allowed by {allowed}");
        assert_eq!(text(response).await, "fetched\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn call_http_refuses_what_cannot_be_a_handler_call() {
    let (rt, _rec) = common::runtime();
    // A core module.
    let core = rt.load_module(common::HOSTILE.as_bytes()).unwrap();
    assert!(!core.is_http_proxy());
    let domain = rt
        .create_domain(&core, DomainConfig::default())
        .await
        .unwrap();
    let err = domain
        .call_http(request("/"), CallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchExport(_)), "{err:?}");
    assert!(err.to_string().contains("core module"), "{err}");
    // A component that is no wasi:http/proxy.
    let typed = rt.load_module(&common::components::typed()).unwrap();
    assert!(!typed.is_http_proxy());
    let domain = rt
        .create_domain(&typed, DomainConfig::default())
        .await
        .unwrap();
    let err = domain
        .call_http(request("/"), CallOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchExport(_)), "{err:?}");
    assert!(err.to_string().contains("not a wasi:http/proxy"), "{err}");
    assert!(domain.is_loaded(), "a refused request is no call");
    // A request that names no authority.
    let (_rt, _rec, domain) = example_domain(DomainConfig::default()).await;
    let req = hyper::Request::builder()
        .uri("/hello")
        .body(body_from_bytes(Bytes::new()))
        .unwrap();
    let err = domain.call_http(req, CallOptions::default()).unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    assert!(err.to_string().contains("authority"), "{err}");
    // With a Host header it is one.
    let req = hyper::Request::builder()
        .uri("/hello")
        .header("host", "example.com")
        .body(body_from_bytes(Bytes::new()))
        .unwrap();
    let mut call = domain.call_http(req, CallOptions::default()).unwrap();
    assert_eq!(call.response().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_that_never_answers_is_no_response() {
    // Returns from `handle` without touching its outparam.
    let wat = r#"
      (module
        (memory (export "memory") 1)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 64))
        (func (export "wasi:http/incoming-handler@0.2.12#handle") (param i32 i32)))
    "#;
    let wit = r#"
      package warden:silent;
      world silent { export wasi:http/incoming-handler@0.2.12; }
    "#;
    let bytes = example::build(wit, "silent", wat).unwrap();
    let (rt, _rec) = common::runtime();
    let module = rt.load_module(&bytes).unwrap();
    assert!(module.is_http_proxy());
    let domain = rt
        .create_domain(&module, DomainConfig::default())
        .await
        .unwrap();
    let err = serve(&domain, "/", CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::NoResponse), "{err:?}");
    assert!(domain.is_loaded(), "the call itself succeeded");
}

/// The bundled example with routes that pass absurd sizes to `wasi:http` and `wasi:io`
/// imports (built here from its core WAT, so the example itself stays as shipped).
fn absurd_component() -> Vec<u8> {
    const IMPORTS: &str = r#"
  (import "wasi:http/types@0.2.12" "[static]fields.from-list"
    (func $fields_from_list (param i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]fields.append"
    (func $fields_append (param i32 i32 i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.write"
    (func $stream_write (param i32 i32 i32 i32)))
"#;
    const FUNCS: &str = r#"
  (data (i32.const 300) "/huge-write")
  (data (i32.const 320) "/huge-list")
  (data (i32.const 340) "/many-fields")
  (data (i32.const 360) "/huge-name")
  (data (i32.const 380) "/no-check-write")
  (data (i32.const 400) "x-absurd")

  ;; An output stream of a response body that was never set as the response.
  (func $unsent_stream (result i32)
    (call $response_body (call $response (call $fields)) (i32.const 1024))
    (call $body_write (i32.load (i32.const 1028)) (i32.const 1024))
    (i32.load (i32.const 1028)))

  ;; Routes past the example's: 431 when the host refused a field, else 200.
  (func $absurd (param $p i32) (param $n i32) (param $outparam i32) (result i32)
    (local $f i32) (local $i i32) (local $out i32)
    ;; 2 GiB "written" from a 128 KiB memory.
    (if (call $eq (local.get $p) (local.get $n) (i32.const 300) (i32.const 11))
      (then
        (call $write (call $unsent_stream) (i32.const 0) (i32.const 0x7fffffff) (i32.const 1056))
        (return (i32.const 1))))
    ;; A header list of 2^28 entries (4 GiB of tuples).
    (if (call $eq (local.get $p) (local.get $n) (i32.const 320) (i32.const 10))
      (then
        (call $fields_from_list (i32.const 0) (i32.const 0x10000000) (i32.const 1024))
        (return (i32.const 1))))
    ;; 100,000 appends of a 1000-byte value (100 MB if nothing bounded them).
    (if (call $eq (local.get $p) (local.get $n) (i32.const 340) (i32.const 12))
      (then
        (local.set $f (call $fields))
        (block $refused (loop $l
          (call $fields_append (local.get $f) (i32.const 400) (i32.const 8)
            (i32.const 8192) (i32.const 1000) (i32.const 1024))
          (br_if $refused (i32.load8_u (i32.const 1024)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 100000)))))
        (if (i32.load8_u (i32.const 1024))
          (then (call $respond (local.get $outparam) (i32.const 431) (i32.const 230) (i32.const 10)))
          (else (call $respond (local.get $outparam) (i32.const 200) (i32.const 200) (i32.const 18))))
        (return (i32.const 1))))
    ;; A field name of 2 GiB.
    (if (call $eq (local.get $p) (local.get $n) (i32.const 360) (i32.const 10))
      (then
        (call $fields_append (call $fields) (i32.const 0) (i32.const 0x7fffffff)
          (i32.const 400) (i32.const 1) (i32.const 1024))
        (return (i32.const 1))))
    ;; Writes of 64 KiB, never asking check-write how much may be written.
    (if (call $eq (local.get $p) (local.get $n) (i32.const 380) (i32.const 15))
      (then
        (call $begin (local.get $outparam) (i32.const 200))
        (loop $l
          (call $stream_write (global.get $out) (i32.const 8192) (i32.const 65536) (i32.const 1056))
          (br_if $l (i32.eqz (i32.load8_u (i32.const 1056)))))
        (call $end)
        (return (i32.const 1))))
    (i32.const 0))
"#;
    let wat = example::WAT
        .replacen(
            "  (memory (export \"memory\") 2)",
            &format!("{IMPORTS}  (memory (export \"memory\") 2)"),
            1,
        )
        .replacen(
            "  (func $recurse (call $recurse))",
            &format!("{FUNCS}  (func $recurse (call $recurse))"),
            1,
        )
        .replacen(
            "    (call $respond (local.get $outparam) (i32.const 404)",
            "    (if (call $absurd (local.get $p) (local.get $n) (local.get $outparam))
      (then (call $drop_request (local.get $req)) (return)))
    (call $respond (local.get $outparam) (i32.const 404)",
            1,
        );
    example::build(example::WIT, "proxy", &wat).expect("the absurd component builds")
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_sizes_at_wasi_http_imports_end_their_domain_with_a_clear_outcome() {
    let (rt, rec) = common::runtime();
    let module = rt.load_module(&absurd_component()).unwrap();
    let config = DomainConfig {
        max_memory: 16 << 20,
        ..DomainConfig::default()
    };
    // A neighbour serving throughout: none of this may cost it anything.
    let neighbour = rt.create_domain(&module, config.clone()).await.unwrap();
    for path in ["/huge-write", "/huge-list", "/huge-name"] {
        let domain = rt.create_domain(&module, config.clone()).await.unwrap();
        let err = serve(&domain, path, deadline(5_000)).await.unwrap_err();
        let HttpError::Call(CallError::Trap { message, .. }) = &err else {
            panic!("{path}: {err:?}");
        };
        assert!(!message.is_empty(), "{path}: the trap says what was wrong");
        unloaded(&domain).await;
        let ok = serve(&neighbour, "/hello", CallOptions::default())
            .await
            .unwrap();
        assert_eq!(text(ok).await, "hello from warden\n", "after {path}");
    }

    // A write past what check-write allows is the stream's trap, after the response head.
    let domain = rt.create_domain(&module, config.clone()).await.unwrap();
    let mut call = domain
        .call_http(request("/no-check-write"), deadline(5_000))
        .unwrap();
    let response = call.response().await.unwrap();
    assert_eq!(response.status(), 200);
    let out = call.into_handle().join().await;
    let Err(CallError::Trap { message, .. }) = &out else {
        panic!("no-check-write: {out:?}");
    };
    assert!(message.contains("budget"), "{message}");
    drop(response);
    unloaded(&domain).await;

    // Fields past the host's size limit are refused to the guest (an error it sees), not
    // stored without bound.
    let domain = rt.create_domain(&module, config).await.unwrap();
    let response = serve(&domain, "/many-fields", deadline(5_000))
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let ok = serve(&neighbour, "/hello", CallOptions::default())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(rt.domain_count() >= 1);
    let traps = rec
        .named("call_finished")
        .iter()
        .filter(|e| e["outcome"] == "trap")
        .count();
    assert_eq!(traps, 4, "{:?}", rec.named("call_finished"));
}
