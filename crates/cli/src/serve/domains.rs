//! The real [`Handler`]: each request a `call_http` in a domain of its app's component.
//!
//! With `instance-reuse = 1` (the default) every request gets a fresh domain, unloaded when
//! its call has ended. With N > 1 a domain goes back to its app's idle list after a request
//! that ended well, until it has served N, or holds more than `recycle-memory`; then it is
//! unloaded. A domain whose call failed is never reused (a component instance that trapped
//! cannot be entered again; the library unloads it), and the failure counts towards the
//! app's quarantine — except refusals that ran no guest code (insufficient memory, process
//! exiting, runtime disabled).
//!
//! Every request's call is settled on a task of its own once it has ended — joined for its
//! outcome, its domain reused or unloaded, its admission place freed — also when the client
//! went away before the response (the call is aborted first). After the response head, a
//! client that goes away drops the response body: the guest's writes to it fail, and the
//! call's deadline bounds a guest that does not write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::{Request, Response};
use warden::http::{BodyError, HttpCall, HttpConfig, HttpError};
use warden::{
    CallError, CallHandle, CallOptions, Domain, DomainConfig, DomainId, Module, Outcome, Runtime,
};

use super::admission::Place;
use super::server::{App, Body, BoxError, Failure, Handler};

/// The apps' components and their domains.
#[derive(Clone)]
pub struct Apps {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    /// By app name: the component, and the idle domains kept for reuse.
    apps: HashMap<String, AppDomains>,
    /// Every domain serving or kept, for `/admin/domains`.
    live: Mutex<HashMap<DomainId, Live>>,
}

struct AppDomains {
    module: Module,
    config: DomainConfig,
    idle: Mutex<Vec<Domain>>,
}

struct Live {
    app: String,
    domain: Domain,
    served: Arc<AtomicU64>,
}

impl Apps {
    /// Serves `apps`, whose components are already loaded (`modules`, by app name).
    pub fn new(runtime: Runtime, apps: &[Arc<App>], modules: HashMap<String, Module>) -> Apps {
        let apps = apps
            .iter()
            .filter_map(|app| {
                let c = &app.config;
                let module = modules.get(&c.name)?.clone();
                let config = DomainConfig {
                    max_memory: c.max_memory,
                    grant: c.grant,
                    http: HttpConfig {
                        allowed_outbound_hosts: c.allowed_outbound_hosts.clone(),
                    },
                    ..DomainConfig::default()
                };
                Some((
                    c.name.clone(),
                    AppDomains {
                        module,
                        config,
                        idle: Mutex::new(Vec::new()),
                    },
                ))
            })
            .collect();
        Apps {
            inner: Arc::new(Inner {
                runtime,
                apps,
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<DomainId, Live>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle domain of the app (reuse), or a fresh one.
    async fn domain(&self, app: &App) -> Result<(Domain, Arc<AtomicU64>), Failure> {
        let name = &app.config.name;
        let Some(pool) = self.inner.apps.get(name) else {
            return Err(Failure::Internal(format!(
                "app \"{name}\" has no component"
            )));
        };
        loop {
            let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(domain) = idle else { break };
            if domain.is_loaded() {
                let served = self.live().get(&domain.id()).map(|l| l.served.clone());
                if let Some(served) = served {
                    return Ok((domain, served));
                }
            }
            self.live().remove(&domain.id());
        }
        let domain = self
            .inner
            .runtime
            .create_domain(&pool.module, pool.config.clone())
            .await
            .map_err(domain_failure)?;
        let served = Arc::new(AtomicU64::new(0));
        self.live().insert(
            domain.id(),
            Live {
                app: name.clone(),
                domain: domain.clone(),
                served: served.clone(),
            },
        );
        Ok((domain, served))
    }
}

/// Why no domain could be made: a soft refusal is 503, anything else 500.
fn domain_failure(e: warden::Error) -> Failure {
    match e {
        warden::Error::Call(c) => Failure::Call(c.outcome(), c.to_string()),
        warden::Error::AtCapacity(why) => Failure::Unavailable(format!("at capacity: {why}")),
        e => Failure::Internal(format!("cannot create a domain: {e}")),
    }
}

/// Whether a failed call ran guest code (and so cost its domain), as opposed to a refusal.
fn ran_guest_code(e: &CallError) -> bool {
    !matches!(
        e.outcome(),
        Outcome::InsufficientMemory | Outcome::ProcessExiting | Outcome::RuntimeDisabled
    )
}

/// What is left to do once a request's call has ended.
struct Settle {
    apps: Apps,
    app: Arc<App>,
    domain: Domain,
    served: Arc<AtomicU64>,
    place: Place,
    /// The failure was already counted for the quarantine (before the client saw it).
    counted: bool,
}

impl Settle {
    /// Joins the call on a task of its own, then reuses or unloads the domain and frees the
    /// admission place.
    fn spawn(self, handle: CallHandle) {
        tokio::spawn(async move {
            let result = handle.join().await;
            let Settle {
                apps,
                app,
                domain,
                served,
                place,
                counted,
            } = self;
            let n = served.fetch_add(1, Ordering::Relaxed) + 1;
            let c = &app.config;
            let failed = match &result {
                Ok(_) => false,
                Err(e) => {
                    if ran_guest_code(e) && !counted {
                        app.quarantine.record_unload(Instant::now());
                    }
                    true
                }
            };
            let keep = !failed
                && domain.is_loaded()
                && n < c.instance_reuse
                && c.recycle_memory.is_none_or(|m| domain.memory_used() <= m);
            if keep {
                if let Some(pool) = apps.inner.apps.get(&c.name) {
                    pool.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(domain);
                }
            } else {
                apps.live().remove(&domain.id());
                domain.unload().await;
            }
            drop(place);
        });
    }
}

/// A request's call until its response: dropped early (the client went away), it aborts
/// the call and still settles it.
struct Pending {
    call: Option<HttpCall>,
    settle: Option<Settle>,
}

impl Pending {
    fn finish(&mut self) {
        if let (Some(call), Some(settle)) = (self.call.take(), self.settle.take()) {
            settle.spawn(call.into_handle());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(call) = &self.call {
            call.abort();
        }
        self.finish();
    }
}

impl Handler for Apps {
    async fn handle(
        &self,
        app: Arc<App>,
        request: Request<Body>,
        place: Place,
    ) -> Result<Response<Body>, Failure> {
        let (domain, served) = self.domain(&app).await?;
        let request = request.map(|b| {
            b.map_err(|e: BoxError| BodyError::InternalError(Some(e.to_string())))
                .boxed_unsync()
        });
        let options = CallOptions {
            deadline: app.config.deadline,
            reserve: app.config.reserve,
            ..CallOptions::default()
        };
        let settle = Settle {
            apps: self.clone(),
            app: app.clone(),
            domain: domain.clone(),
            served,
            place,
            counted: false,
        };
        let call = match domain.call_http(request, options) {
            Ok(call) => call,
            Err(e) => {
                // No call was started: settle the domain now.
                let f = domain_failure(e);
                let Settle { apps, domain, .. } = settle;
                apps.live().remove(&domain.id());
                domain.unload().await;
                return Err(f);
            }
        };
        let mut pending = Pending {
            call: Some(call),
            settle: Some(settle),
        };
        let answer = match pending.call.as_mut() {
            Some(call) => call.response().await,
            None => Err(HttpError::NoResponse),
        };
        // A failure is counted before its client sees it, so the next request already meets
        // the quarantine it caused.
        if let Err(HttpError::Call(e)) = &answer
            && ran_guest_code(e)
        {
            app.quarantine.record_unload(Instant::now());
            if let Some(settle) = pending.settle.as_mut() {
                settle.counted = true;
            }
        }
        pending.finish();
        match answer {
            Ok(response) => {
                Ok(response.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
            }
            Err(HttpError::Call(e)) => Err(Failure::Call(e.outcome(), e.to_string())),
            Err(HttpError::Guest(code)) => Err(Failure::Guest(format!("{code:?}"))),
            Err(HttpError::NoResponse) => Err(Failure::NoResponse),
        }
    }

    fn domains(&self) -> serde_json::Value {
        let live = self.live();
        let mut list: Vec<_> = live
            .iter()
            .map(|(id, l)| {
                serde_json::json!({
                    "id": id,
                    "app": l.app,
                    "busy": l.domain.is_busy(),
                    "loaded": l.domain.is_loaded(),
                    "memory": l.domain.memory_used(),
                    "requests": l.served.load(Ordering::Relaxed),
                })
            })
            .collect();
        list.sort_by_key(|v| v["id"].as_u64());
        serde_json::Value::Array(list)
    }
}
