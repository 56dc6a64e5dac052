//! HTTP: `wasi:http/proxy` components as domains, one handler call per request.
//!
//! A component that exports `wasi:http/incoming-handler@0.2.x` ([`Module::is_http_proxy`])
//! serves a request with [`Domain::call_http`](crate::Domain::call_http). The request becomes the guest's
//! `incoming-request`, a `response-outparam` is made for its answer, and the handler's
//! `handle` runs as a **call of the domain** like any other: queued behind the domain's running
//! call, admitted by its lifecycle, gated by [`CallOptions::reserve`], driven by the worker
//! under its deadline, the policy's abort timers and the domain's memory limit, reported by
//! `call_started` / `call_finished` and escalated by the policy when it fails.
//!
//! [`HttpCall::response`] resolves as soon as the guest sets its `response-outparam`: the
//! response's body then streams to the client while the handler goes on writing it. When the
//! handler ends without a response, the call's own outcome says why ([`HttpError`]).
//!
//! Every `wasi:http` import is wasmtime-wasi-http's (linked with
//! `add_only_http_to_linker_async` next to WASI preview2). None of them blocks: a guest waits
//! for a request body, an outgoing response or a timer through `wasi:io` pollables and
//! streams, whose waits are async host calls. So a guest parked in `pollable.block`, a
//! `blocking-read` of a body the client never sends, or a `blocking-write-and-flush` to a
//! client that does not read, is parked in the domain's driver, and its deadline or abort ends
//! the wait like every other host wait (see [`host`](crate::host)).
//!
//! Outbound requests (`wasi:http/outgoing-handler`) are denied unless the domain's
//! [`HttpConfig::allowed_outbound_hosts`] lists their host: a denied request fails in the
//! guest with `error-code.HTTP-request-denied`, before any connection is made.
//!
//! # Where the guarantees end
//!
//! - **The body outlives the handler's deadline.** The deadline bounds the handler call. A
//!   response body is read by the client at its own pace after that; a slow client stalls
//!   only the guest's writes (which its deadline still ends). A body that the guest leaves
//!   unfinished in its own state after `handle` returned (a reused domain) ends only when the
//!   domain is unloaded: the server must bound how long it streams a body.
//! - **A failed handler ends its domain.** A component instance that trapped (or was
//!   aborted, or passed its deadline) cannot be entered again, so its domain is unloaded after
//!   the call (see [`component`](crate::component)); a body still streaming then ends with an
//!   error, which hyper turns into a truncated, aborted response.
//! - **Host-side buffers are not in the budget.** Request and response bodies in flight,
//!   headers (wasmtime-wasi-http bounds a fields resource at 128 KiB) and outgoing connections
//!   are host memory the memory budget does not count; the domain's linear memory is.
//! - **Resources a guest keeps are its own.** A reused domain's guest may keep request,
//!   response or body resources across calls; they live in the domain's resource table
//!   until it is unloaded.
//! - **Outbound policy is by host name.** The allow list is checked against the request's
//!   authority (host and port) before connecting; what that name resolves to (DNS) is not
//!   checked, and redirects are the guest's to follow (each is a new, checked request).

pub mod example;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use tokio::sync::oneshot;

use crate::call::{CallError, CallHandle, CallOptions, CallResult};
use crate::domain::DomainState;
use crate::engine::{Code, Module};
use crate::error::Error;
use crate::ids::CallId;

/// The error type of [`HyperIncomingBody`] and [`HyperOutgoingBody`].
pub use wasmtime_wasi_http::Error as BodyError;
/// The `wasi:http/types.error-code` a guest answers with.
pub use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
/// A request's body as the guest reads it (build one with [`body_from_hyper`] or
/// [`body_from_bytes`]).
pub use wasmtime_wasi_http::p2::body::HyperIncomingBody;
/// A response's body as the guest writes it: it streams while the handler runs.
pub use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The handler's export, as Warden resolves it (any `0.2.x` version).
pub const HANDLER: &str = "wasi:http/incoming-handler#handle";

/// HTTP options of a domain ([`DomainConfig::http`](crate::DomainConfig::http)). The default
/// denies every outbound request.
#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    /// Hosts (`host` or `host:port`; `*` alone allows all) the guest may send outgoing
    /// requests to; every other outgoing request fails with
    /// [`ErrorCode::HttpRequestDenied`]. A bare `host` allows any port on it; `host:port`
    /// only that port (a request without a port uses its scheme's: 80 or 443). Host names
    /// compare case-insensitively; an IPv6 address is written in brackets (`[::1]:8080`).
    pub allowed_outbound_hosts: Vec<String>,
}

impl HttpConfig {
    /// Whether a request to `authority` (`host[:port]`) under `scheme` is allowed.
    pub fn allows(&self, scheme: Option<&str>, authority: &str) -> bool {
        let (host, port) = split_authority(authority);
        let port = port.or(match scheme {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        });
        self.allowed_outbound_hosts.iter().any(|entry| {
            let entry = entry.trim();
            if entry == "*" {
                return true;
            }
            let (h, p) = split_authority(entry);
            h.eq_ignore_ascii_case(host) && (p.is_none() || p == port)
        })
    }
}

/// `host:port` → (`host`, port); a bracketed IPv6 address keeps its brackets.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    // Userinfo (`user@host`) names no host.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let colon = match authority.rfind(']') {
        Some(end) => authority[end..].find(':').map(|i| end + i),
        None => authority.rfind(':'),
    };
    match colon {
        Some(i) => match authority[i + 1..].parse() {
            Ok(port) => (&authority[..i], Some(port)),
            // Not a port: never equal to an entry's host:port, so never allowed by one.
            Err(_) => (authority, Some(0)),
        },
        None => (authority, None),
    }
}

/// A request body from a hyper server's body.
pub fn body_from_hyper(body: hyper::body::Incoming) -> HyperIncomingBody {
    use http_body_util::BodyExt;
    body.map_err(BodyError::from).boxed_unsync()
}

/// A request body of fixed bytes (empty: `Bytes::new()`).
pub fn body_from_bytes(bytes: impl Into<bytes::Bytes>) -> HyperIncomingBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What a component domain keeps for `wasi:http`: the context and the outbound policy.
/// (Its resources live in the domain's preview2 resource table, with the streams they use.)
pub(crate) struct HttpState {
    ctx: wasmtime_wasi_http::WasiHttpCtx,
    hooks: Outbound,
}

impl HttpState {
    pub(crate) fn new(config: &HttpConfig) -> Self {
        HttpState {
            ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: Outbound {
                config: Arc::new(config.clone()),
            },
        }
    }
}

/// The `send_request` hook: the allow list first, then wasmtime-wasi-http's own client.
struct Outbound {
    config: Arc<HttpConfig>,
}

type SendResult = wasmtime_wasi_http::Result<(
    hyper::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl wasmtime_wasi_http::WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let allowed = uri
            .authority()
            .is_some_and(|a| self.config.allows(uri.scheme_str(), a.as_str()));
        if !allowed {
            tracing::debug!(uri = %uri, "outbound request denied");
            return Box::new(async { Err(BodyError::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl wasmtime_wasi_http::WasiHttpView for DomainState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        let p2 = self
            .wasi_p2
            .as_mut()
            .expect("the component linker is only used with component stores, which have one");
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut p2.http.ctx,
            table: &mut p2.table,
            hooks: &mut p2.http.hooks,
        }
    }
}

/// Runs the handler of `instance` on `request` in `store`: the request and the response
/// outparam (answered through `sender`) become resources of the store, then `handle` is called
/// (the worker drives this future like any call).
pub(crate) async fn handle(
    store: &mut wasmtime::Store<DomainState>,
    module: &Module,
    instance: &wasmtime::component::Instance,
    request: hyper::Request<HyperIncomingBody>,
    sender: oneshot::Sender<Answer>,
) -> wasmtime::Result<()> {
    let proxy = proxy(store, module, instance)?;
    let mut view = wasmtime_wasi_http::WasiHttpView::http(store.data_mut());
    let scheme = wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http;
    let req = view.new_incoming_request(scheme, request)?;
    let out = view.new_response_outparam(sender)?;
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, req, out)
        .await
}

/// The handler's typed bindings in a domain's instance (looked up once per module).
fn proxy(
    store: &mut wasmtime::Store<DomainState>,
    module: &Module,
    instance: &wasmtime::component::Instance,
) -> wasmtime::Result<wasmtime_wasi_http::p2::bindings::Proxy> {
    let Code::Component(c) = &module.code else {
        wasmtime::bail!("a core module has no wasi:http handler");
    };
    let indices = c
        .http
        .get_or_init(|| {
            wasmtime_wasi_http::p2::bindings::ProxyIndices::new(&instance.instance_pre(&*store))
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| wasmtime::Error::msg(e.clone()))?;
    indices.load(store, instance)
}

/// How a handler call ended, as its response body needs to know: wasmtime-wasi-http ends a
/// body whose guest went away (its store dropped) as if it were complete.
/// (0 while it runs, 1 ok, 2 failed.)
#[derive(Default)]
pub(crate) struct Ending(AtomicU8);

const FAILED: u8 = 2;

impl Ending {
    pub(crate) fn set(&self, ok: bool) {
        self.0.store(if ok { 1 } else { FAILED }, Ordering::SeqCst);
    }

    fn failed(&self) -> bool {
        self.0.load(Ordering::SeqCst) == FAILED
    }
}

/// The guest's response body, ending in an error instead of looking complete when the handler
/// failed before it finished the body (so hyper aborts the response rather than send a
/// truncated one as whole).
struct Guarded {
    inner: HyperOutgoingBody,
    ending: Arc<Ending>,
    done: bool,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done = true;
                match self.ending.failed() {
                    true => Poll::Ready(Some(Err(BodyError::HttpResponseIncomplete))),
                    false => Poll::Ready(None),
                }
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only once its end was seen: the end is where the failure is told.
        self.done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What the guest answered through its `response-outparam`.
pub(crate) type Answer = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

/// One HTTP handler call in flight ([`Domain::call_http`](crate::Domain::call_http)).
pub struct HttpCall {
    /// `None` once a response (or an error) was returned.
    answer: Option<oneshot::Receiver<Answer>>,
    ending: Arc<Ending>,
    handle: CallHandle,
    /// The call's result, once [`response`](Self::response) took it from the handle.
    outcome: Option<CallResult>,
}

impl std::fmt::Debug for HttpCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCall")
            .field("id", &self.handle.id())
            .field("domain", &self.handle.domain_id())
            .finish()
    }
}

/// Why a handler call gave no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The call ended without a response: its outcome (timeout, trap, stack overflow, out of
    /// memory, aborted, insufficient memory, domain unloaded, process exiting, ...).
    #[error("the handler gave no response: {0}")]
    Call(CallError),
    /// The guest answered with an error instead of a response.
    #[error("the handler answered with an error: {0:?}")]
    Guest(ErrorCode),
    /// The handler returned without setting its `response-outparam` (or the response was
    /// already taken by an earlier [`HttpCall::response`]).
    #[error("the handler returned without setting its response")]
    NoResponse,
}

impl HttpCall {
    fn new(answer: oneshot::Receiver<Answer>, ending: Arc<Ending>, handle: CallHandle) -> Self {
        HttpCall {
            answer: Some(answer),
            ending,
            handle,
            outcome: None,
        }
    }

    /// The call's id (as in events).
    pub fn id(&self) -> CallId {
        self.handle.id()
    }

    /// Resolves when the guest sets its `response-outparam`: `Ok(response)`, whose body
    /// streams while the handler goes on writing it. Or when the call ends without a
    /// response: [`HttpError::Call`] with the call's error, [`HttpError::Guest`] when the
    /// guest set an error, [`HttpError::NoResponse`] when the handler returned without
    /// setting it. Dropping this future changes nothing: the call goes on.
    pub async fn response(&mut self) -> Result<hyper::Response<HyperOutgoingBody>, HttpError> {
        let Some(answer) = self.answer.as_mut() else {
            return Err(HttpError::NoResponse);
        };
        if self.outcome.is_none() {
            tokio::select! {
                // A response set before the call ended wins, even if the call then failed.
                biased;
                a = &mut *answer => {
                    self.answer = None;
                    if let Ok(a) = a {
                        return self.guarded(a);
                    }
                }
                r = &mut self.handle.rx => {
                    self.outcome = Some(r.unwrap_or(Err(CallError::DomainUnloaded)));
                }
            }
        }
        // The call has ended (or the sender is gone, so it is ending): a response set just
        // before the end still counts.
        if let Some(answer) = self.answer.as_mut()
            && let Ok(a) = answer.try_recv()
        {
            self.answer = None;
            return self.guarded(a);
        }
        self.answer = None;
        if self.outcome.is_none() {
            let r = (&mut self.handle.rx).await;
            self.outcome = Some(r.unwrap_or(Err(CallError::DomainUnloaded)));
        }
        match &self.outcome {
            Some(Err(e)) => Err(HttpError::Call(e.clone())),
            _ => Err(HttpError::NoResponse),
        }
    }

    fn guarded(&self, answer: Answer) -> Result<hyper::Response<HyperOutgoingBody>, HttpError> {
        use http_body_util::BodyExt;
        let response = answer.map_err(HttpError::Guest)?;
        let ending = self.ending.clone();
        Ok(response.map(|inner| {
            Guarded {
                inner,
                ending,
                done: false,
            }
            .boxed_unsync()
        }))
    }

    /// The [`CallHandle`] of the handler call: [`join`](CallHandle::join) it for the call's
    /// outcome once the body is done. Dropping it does not abort the call.
    pub fn into_handle(self) -> CallHandle {
        let mut handle = self.handle;
        if let Some(outcome) = self.outcome {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(outcome);
            handle.rx = rx;
        }
        handle
    }

    /// Aborts the call: the embedder's abort, the policy's `abort` operation (see
    /// [`CallHandle::abort`]).
    pub fn abort(&self) {
        self.handle.abort();
    }
}

impl Module {
    /// Whether this component exports `wasi:http/incoming-handler@0.2.x#handle` (a
    /// `wasi:http/proxy` component). Always false for a core module.
    pub fn is_http_proxy(&self) -> bool {
        match &self.code {
            Code::Core(_) => false,
            Code::Component(c) => c.resolve(HANDLER).is_ok_and(|(export, _)| {
                export.name.starts_with("wasi:http/incoming-handler@0.2.")
                    && export.func.params().len() == 2
                    && export.results() == 0
            }),
        }
    }
}

impl crate::Domain {
    /// Starts the component's `wasi:http/incoming-handler#handle` with `request`, as a call of
    /// the domain (queued, admitted, run through the worker and its driver like every call:
    /// deadline, abort, memory limit, budget, the gate's reservation
    /// ([`CallOptions::reserve`]), events, policy escalation all apply). Its outcome comes from
    /// [`HttpCall::response`] and [`HttpCall::into_handle`].
    ///
    /// `Err` here only for a request that cannot be a call: the domain holds no HTTP handler
    /// ([`Error::NoSuchExport`]), or the request names no authority (no URI authority and no
    /// valid `Host` header: [`Error::BadRequest`]). A domain that is unloaded, or a runtime that
    /// is exiting, answers through the call's outcome, as for every call.
    pub fn call_http(
        &self,
        request: hyper::Request<HyperIncomingBody>,
        options: CallOptions,
    ) -> Result<HttpCall, Error> {
        let module = self.module();
        if !module.is_component() {
            return Err(Error::NoSuchExport(format!(
                "{HANDLER}`: the domain holds a core module, not a wasi:http/proxy component; \
                 call its exports with `invoke` or `call"
            )));
        }
        if !module.is_http_proxy() {
            return Err(Error::NoSuchExport(format!(
                "{HANDLER}`: the component is not a wasi:http/proxy component (it exports no \
                 `wasi:http/incoming-handler@0.2.x"
            )));
        }
        // wasmtime-wasi-http refuses a request without an authority only once it is in the
        // worker; refused here, it is the caller's error, not the guest's.
        let has_authority = request.uri().authority().is_some()
            || request
                .headers()
                .get(hyper::header::HOST)
                .is_some_and(|h| h.to_str().is_ok());
        if !has_authority {
            return Err(Error::BadRequest(
                "the request has no authority: neither its URI nor a valid `Host` header names \
                 one"
                .into(),
            ));
        }
        let (sender, answer) = oneshot::channel();
        let ending = Arc::new(Ending::default());
        let handle = self.shared.call(
            HANDLER,
            crate::worker::Args::Http {
                request: Box::new(request),
                sender,
                ending: ending.clone(),
            },
            options,
        )?;
        Ok(HttpCall::new(answer, ending, handle))
    }
}

#[cfg(test)]
mod tests {
    use super::{HttpConfig, split_authority};

    fn allowing(hosts: &[&str]) -> HttpConfig {
        HttpConfig {
            allowed_outbound_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = HttpConfig::default();
        assert!(!none.allows(Some("http"), "example.com"));
        assert!(!none.allows(Some("https"), "127.0.0.1:8080"));
    }

    #[test]
    fn a_host_allows_every_port_and_host_port_only_its_own() {
        let c = allowing(&["Example.com", "api.test:8443", "[::1]:8080"]);
        assert!(c.allows(Some("http"), "example.com"));
        assert!(c.allows(Some("https"), "EXAMPLE.COM:9000"));
        assert!(c.allows(Some("https"), "api.test:8443"));
        assert!(!c.allows(Some("https"), "api.test"), "443 is not 8443");
        assert!(!c.allows(Some("http"), "api.test:80"));
        assert!(c.allows(Some("http"), "[::1]:8080"));
        assert!(!c.allows(Some("http"), "[::1]:8081"));
        assert!(!c.allows(Some("http"), "example.com.evil.test"));
        assert!(!c.allows(Some("http"), "evil.test"));
        // Userinfo names no host.
        assert!(!c.allows(Some("http"), "example.com@evil.test"));
        assert!(c.allows(Some("http"), "someone@example.com"));
        // The scheme's port counts for host:port entries.
        let c = allowing(&["plain.test:80"]);
        assert!(c.allows(Some("http"), "plain.test"));
        assert!(!c.allows(Some("https"), "plain.test"));
    }

    #[test]
    fn a_star_allows_all() {
        let c = allowing(&["*"]);
        assert!(c.allows(Some("https"), "anything.test:1"));
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_authority("a.test:80"), ("a.test", Some(80)));
        assert_eq!(split_authority("a.test"), ("a.test", None));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
        assert_eq!(split_authority("[::1]:9"), ("[::1]", Some(9)));
        assert_eq!(split_authority("a.test:http"), ("a.test:http", Some(0)));
    }
}
