//! The request path and the two listeners, over a [`Handler`] that runs one request.
//!
//! Per request: route (the longest matching path prefix) → quarantine → admission → the
//! handler, whose failure is mapped to a status here ([`Failure::status`]). The handler is a
//! trait so that everything but the guest (admission, routing, statuses, quarantine, drain,
//! metrics) is tested with a fake one; [`super::domains::Apps`] is the real one.
//!
//! Drain (the first SIGTERM/SIGINT): the request listener closes, readiness turns false,
//! hyper's graceful shutdown closes idle keep-alive connections at once and the others after
//! the response in flight, all bounded by `drain`. The admin listener stays up until the
//! process ends, so `/readyz` answers 503 meanwhile.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use warden::{Outcome, Runtime};

use super::admission::{Admission, Place};
use super::config::AppConfig;
use super::metrics::{Metrics, Snapshot};
use super::quarantine::Quarantine;

/// Any error of a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request or response body, as the server passes it on.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A slow client gets this long to send its request head (a slowloris holds no connection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `/healthz` fails when the server's heartbeat task has not run for this long (its async
/// runtime is starved or stuck).
const HEARTBEAT_STALE: Duration = Duration::from_secs(5);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// One app and its state.
#[derive(Debug)]
pub struct App {
    /// As configured.
    pub config: AppConfig,
    /// Its quarantine.
    pub quarantine: Quarantine,
}

impl App {
    /// An app, not quarantined.
    pub fn new(config: AppConfig) -> App {
        App {
            quarantine: Quarantine::new(config.restart_intensity, config.cool_down),
            config,
        }
    }
}

/// Why a request got no response from its guest.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The call ended without a response: its outcome and what the runtime said.
    Call(Outcome, String),
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest answered with a `wasi:http` error code (its debug text).
    Guest(String),
    /// No domain could be made for the request: out of budget or instance slots (503).
    Unavailable(String),
    /// No domain could be made for another reason (500).
    Internal(String),
}

impl Failure {
    /// The status a client gets: a deadline is 504; a refusal for want of memory, or
    /// because the process is exiting or the runtime disabled, 503 (retry elsewhere or
    /// later); a guest that crashed (trap, stack overflow, out of memory, aborted, its
    /// domain unloaded) or did not answer, 500; a guest that answered with a `wasi:http`
    /// error code, 502 (as a proxy whose upstream failed).
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::Call(outcome, _) => match outcome {
                Outcome::Timeout => StatusCode::GATEWAY_TIMEOUT,
                Outcome::InsufficientMemory
                | Outcome::ProcessExiting
                | Outcome::RuntimeDisabled => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Failure::NoResponse | Failure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Failure::Guest(_) => StatusCode::BAD_GATEWAY,
            Failure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `outcome` label of `warden_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Call(outcome, _) => outcome.as_str(),
            Failure::NoResponse => "no_response",
            Failure::Guest(_) => "guest_error",
            Failure::Unavailable(_) => "unavailable",
            Failure::Internal(_) => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Call(outcome, detail) => format!("{outcome}: {detail}"),
            Failure::NoResponse => "the handler returned without a response".into(),
            Failure::Guest(code) => format!("the handler answered with an error: {code}"),
            Failure::Unavailable(why) | Failure::Internal(why) => why.clone(),
        }
    }
}

/// Why an app's version could not be switched to: the status and message for the admin
/// client.
#[derive(Debug)]
pub struct ReplaceError {
    /// 404 unknown app or version, 409 not a store app, 400 a bad version, 422 the version
    /// does not load or is no `wasi:http/proxy`.
    pub status: StatusCode,
    /// What was wrong.
    pub message: String,
}

/// The largest body `POST /admin/apps/NAME/version` reads (a version is at most 64 bytes).
const MAX_VERSION_BODY: usize = 256;

/// Runs one request of an app.
pub trait Handler: Send + Sync + 'static {
    /// The guest's response, or why there is none. `place` is the request's admission
    /// place: hold it until the request's call has ended. Dropping the returned future (the
    /// client went away) must abort the request's call.
    fn handle(
        &self,
        app: Arc<App>,
        request: Request<Body>,
        place: Place,
    ) -> impl Future<Output = Result<Response<Body>, Failure>> + Send;

    /// `/admin/domains`: the domains alive now, as JSON.
    fn domains(&self) -> serde_json::Value;

    /// `POST /admin/apps/NAME/version`: switches `app` to `version` of its store module
    /// (`None`: the latest); the version now served. By default no app can be switched.
    fn replace_version(
        &self,
        app: &str,
        version: Option<String>,
    ) -> impl Future<Output = Result<String, ReplaceError>> + Send {
        let message = format!("app \"{app}\" cannot be switched to {version:?}");
        async move {
            Err(ReplaceError {
                status: StatusCode::CONFLICT,
                message,
            })
        }
    }

    /// The store version `app` serves now (`None`: a component file).
    fn version(&self, app: &str) -> Option<String> {
        let _ = app;
        None
    }
}

/// What both listeners share.
pub struct Server<H> {
    /// Runs requests.
    pub handler: H,
    /// The apps, in config order.
    pub apps: Vec<Arc<App>>,
    /// The admission gate.
    pub admission: Admission,
    /// `Retry-After` for refusals.
    pub retry_after: Duration,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The runtime (readiness, memory figures).
    pub runtime: Runtime,
    /// Set once the drain began.
    draining: AtomicBool,
    /// Milliseconds since `started` at the last heartbeat.
    heartbeat: AtomicU64,
    started: Instant,
}

impl<H: Handler> Server<H> {
    /// A server for `apps`, admitting as `admission` allows.
    pub fn new(
        handler: H,
        apps: Vec<Arc<App>>,
        admission: Admission,
        retry_after: Duration,
        metrics: Arc<Metrics>,
        runtime: Runtime,
    ) -> Arc<Self> {
        let server = Arc::new(Server {
            handler,
            apps,
            admission,
            retry_after,
            metrics,
            runtime,
            draining: AtomicBool::new(false),
            heartbeat: AtomicU64::new(0),
            started: Instant::now(),
        });
        let weak = Arc::downgrade(&server);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            while let Some(s) = weak.upgrade() {
                s.heartbeat
                    .store(s.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                drop(s);
                tick.tick().await;
            }
        });
        server
    }

    /// The app serving `path`: the longest route that is `path` itself or a prefix of it
    /// ending at a `/` (so `/api` serves `/api` and `/api/x`, not `/apix`).
    pub fn route(&self, path: &str) -> Option<&Arc<App>> {
        self.apps
            .iter()
            .filter(|a| route_matches(&a.config.route, path))
            .max_by_key(|a| a.config.route.len())
    }

    /// Why the server is not ready, if it is not.
    pub fn unready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Some("draining")
        } else if self.runtime.is_exiting() {
            Some("exiting")
        } else if self.runtime.is_disabled() {
            Some("runtime disabled by policy")
        } else if self.apps.is_empty() {
            Some("no apps loaded")
        } else {
            None
        }
    }

    /// Serves one request of the request listener.
    pub async fn serve<B>(self: Arc<Self>, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(app) = self.route(request.uri().path()).cloned() else {
            self.metrics.request("", "no_route", None);
            return text(
                StatusCode::NOT_FOUND,
                format!("warden: no app serves {}\n", request.uri().path()),
            );
        };
        let name = app.config.name.as_str();
        if let Some(left) = app.quarantine.remaining(Instant::now()) {
            self.metrics.request(name, "quarantined", None);
            return self.refuse(
                format!("warden: app \"{name}\" is quarantined (its domains kept failing)\n"),
                left,
            );
        }
        let started = Instant::now();
        let Ok(place) = self.admission.admit().await else {
            self.metrics.request(name, "admission", None);
            return self.refuse(
                "warden: too many requests in flight and waiting\n".into(),
                self.retry_after,
            );
        };
        let request = request.map(|b| b.map_err(Into::into).boxed_unsync());
        let mut unanswered = Unanswered {
            metrics: &self.metrics,
            app: name,
            started,
            armed: true,
        };
        let answer = self.handler.handle(app.clone(), request, place).await;
        unanswered.armed = false;
        match answer {
            Ok(response) => {
                self.metrics.request(name, "ok", Some(started.elapsed()));
                response
            }
            Err(failure) => {
                self.metrics
                    .request(name, failure.label(), Some(started.elapsed()));
                let mut r = text(
                    failure.status(),
                    format!("warden: app \"{name}\": {}\n", failure.message()),
                );
                if failure.status() == StatusCode::SERVICE_UNAVAILABLE {
                    set_retry_after(&mut r, self.retry_after);
                }
                r
            }
        }
    }

    fn refuse(&self, body: String, after: Duration) -> Response<Body> {
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, body);
        set_retry_after(&mut r, after);
        r
    }

    /// Serves one request of the admin listener.
    pub async fn admin<B>(self: Arc<Self>, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let path = request.uri().path().to_string();
        if let Some(name) = path
            .strip_prefix("/admin/apps/")
            .and_then(|p| p.strip_suffix("/version"))
        {
            return self.switch_version(name.to_string(), request).await;
        }
        let path = path.as_str();
        let get = request.method() == Method::GET || request.method() == Method::HEAD;
        match path {
            "/healthz" if get => {
                let beat = Duration::from_millis(self.heartbeat.load(Ordering::Relaxed));
                let since = self.started.elapsed().saturating_sub(beat);
                if since > HEARTBEAT_STALE {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("stalled: no heartbeat for {} ms\n", since.as_millis()),
                    )
                } else {
                    text(StatusCode::OK, "ok\n".into())
                }
            }
            "/readyz" if get => match self.unready() {
                None => text(StatusCode::OK, "ready\n".into()),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/metrics" if get => {
                let mem = self.runtime.memory();
                let body = self.metrics.encode(Snapshot {
                    live_domains: self.runtime.domain_count(),
                    memory_used: mem.used,
                    memory_reserved: mem.reserved,
                    memory_budget: mem.limit,
                    queue_depth: self.admission.queue_depth(),
                    in_flight: self.admission.in_flight(),
                    quarantined: self
                        .apps
                        .iter()
                        .map(|a| {
                            let q = a.quarantine.remaining(Instant::now()).is_some();
                            (a.config.name.clone(), q)
                        })
                        .collect(),
                });
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
            "/admin/domains" if get => json(self.handler.domains()),
            "/admin/apps" if get => json(serde_json::Value::Array(
                self.apps
                    .iter()
                    .map(|a| {
                        let left = a.quarantine.remaining(Instant::now());
                        serde_json::json!({
                            "name": a.config.name,
                            "route": a.config.route,
                            "quarantined": left.is_some(),
                            "quarantine_left_ms": left.map(|d| d.as_millis() as u64),
                            "version": self.handler.version(&a.config.name),
                        })
                    })
                    .collect(),
            )),
            _ => match path
                .strip_prefix("/admin/apps/")
                .and_then(|p| p.strip_suffix("/restore"))
            {
                Some(name) if request.method() == Method::POST => {
                    match self.apps.iter().find(|a| a.config.name == name) {
                        Some(app) => {
                            let was = app.quarantine.restore();
                            text(
                                StatusCode::OK,
                                format!(
                                    "{name}: {}\n",
                                    if was {
                                        "restored"
                                    } else {
                                        "was not quarantined"
                                    }
                                ),
                            )
                        }
                        None => text(StatusCode::NOT_FOUND, format!("no app named {name}\n")),
                    }
                }
                Some(_) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into()),
                None => text(
                    StatusCode::NOT_FOUND,
                    "try /healthz, /readyz, /metrics, /admin/domains, /admin/apps, \
                     POST /admin/apps/NAME/restore, POST /admin/apps/NAME/version\n"
                        .into(),
                ),
            },
        }
    }
}

impl<H: Handler> Server<H> {
    /// `POST /admin/apps/NAME/version`, the body the version (empty: the latest).
    async fn switch_version<B>(&self, name: String, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into());
        }
        let body = http_body_util::Limited::new(request.into_body(), MAX_VERSION_BODY);
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the version (at most {MAX_VERSION_BODY} bytes): {e}\n"),
                );
            }
        };
        let Ok(version) = std::str::from_utf8(&bytes) else {
            return text(StatusCode::BAD_REQUEST, "the version is not UTF-8\n".into());
        };
        let version = version.trim();
        let version = (!version.is_empty()).then(|| version.to_string());
        let was = self.handler.version(&name);
        match self.handler.replace_version(&name, version).await {
            Ok(now) => {
                let was = was.unwrap_or_else(|| "?".into());
                crate::output::err(&format!(
                    "warden: app \"{name}\" now serves version {now} (was {was})"
                ));
                text(StatusCode::OK, format!("{name}: {now} (was {was})\n"))
            }
            Err(e) => text(e.status, format!("{name}: {}\n", e.message)),
        }
    }
}

fn route_matches(route: &str, path: &str) -> bool {
    match path.strip_prefix(route) {
        None => false,
        Some(rest) => rest.is_empty() || route.ends_with('/') || rest.starts_with('/'),
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: serde_json::Value) -> Response<Body> {
    let mut r = text(StatusCode::OK, format!("{value}\n"));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn full(body: String) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn set_retry_after(r: &mut Response<Body>, after: Duration) {
    // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection closed within the bound.
    InTime,
    /// The bound passed with connections still open: `usize` of them were cut off.
    CutOff(usize),
}

/// Serves requests from `listener` until `stop` resolves, then drains within `drain`.
pub async fn serve_requests<H: Handler>(
    server: Arc<Server<H>>,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    drain: Duration,
) -> Drained {
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors or a connection reset before accept: the
                        // listener is fine; back off a moment rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let s = server.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(s.serve(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // A client's broken connection is the client's business.
                    let _ = conn.await;
                });
            }
            () = &mut stop => break,
        }
    }
    // New connections are refused from here on.
    drop(listener);
    server.draining.store(true, Ordering::SeqCst);
    let counted = graceful.count();
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => Drained::InTime,
        Err(_) => Drained::CutOff(counted),
    }
}

/// Serves the admin endpoints from `listener` for as long as the process lives.
pub async fn serve_admin<H: Handler>(server: Arc<Server<H>>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let s = server.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let s = s.clone();
            async move { Ok::<_, Infallible>(s.admin(req).await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Counts a request whose client went away before it was answered: hyper drops the request's
/// future then (the handler's call is aborted as it drops), so no answer is ever recorded.
struct Unanswered<'a> {
    metrics: &'a Metrics,
    app: &'a str,
    started: Instant,
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.metrics
                .request(self.app, "client_gone", Some(self.started.elapsed()));
        }
    }
}
