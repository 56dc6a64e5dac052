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
//! An app served from the module store (`module = "NAME@VERSION"`) can be switched to another
//! version while it runs ([`Apps::replace_version`], `POST /admin/apps/NAME/version`): the
//! new version is loaded (and checked) first, then becomes current in one step. Requests
//! that start afterwards get domains of the new version; requests in flight finish on the
//! old one, whose domains are unloaded when their calls end (never reused); the old
//! version's idle domains are unloaded at once.
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
use super::server::{App, Body, BoxError, Failure, Handler, ReplaceError};

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
    /// The module store, for apps served from it (and their replacement).
    store: Option<Arc<warden::DirStore>>,
}

/// An app's code, as loaded: the module, and its store version (`None`: a file).
#[derive(Clone)]
pub struct Version {
    /// The compiled component.
    pub module: Module,
    /// The store version it is (`None` for a component file).
    pub version: Option<String>,
}

struct AppDomains {
    config: DomainConfig,
    /// The store module's name, for an app served from the store.
    store_name: Option<String>,
    /// The version new requests get. Idle domains are pushed onto its list only under this
    /// lock, so none lands on a version that was replaced meanwhile.
    current: Mutex<Arc<Generation>>,
}

/// One version of an app and the idle domains of that version.
struct Generation {
    code: Version,
    idle: Mutex<Vec<Domain>>,
}

impl AppDomains {
    fn current(&self) -> Arc<Generation> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

struct Live {
    app: String,
    version: Option<String>,
    domain: Domain,
    served: Arc<AtomicU64>,
}

fn replace_error(status: hyper::StatusCode, message: String) -> ReplaceError {
    ReplaceError { status, message }
}

impl Apps {
    /// Serves `apps`, whose components are already loaded (`modules`, by app name); `store`
    /// is where apps named by `module = ...` come from.
    pub fn new(
        runtime: Runtime,
        apps: &[Arc<App>],
        modules: HashMap<String, Version>,
        store: Option<Arc<warden::DirStore>>,
    ) -> Apps {
        let apps = apps
            .iter()
            .filter_map(|app| {
                let c = &app.config;
                let code = modules.get(&c.name)?.clone();
                let store_name = match &c.component {
                    super::config::ComponentSource::Store(r) => Some(r.name.clone()),
                    _ => None,
                };
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
                        config,
                        store_name,
                        current: Mutex::new(Arc::new(Generation {
                            code,
                            idle: Mutex::new(Vec::new()),
                        })),
                    },
                ))
            })
            .collect();
        Apps {
            inner: Arc::new(Inner {
                runtime,
                apps,
                live: Mutex::new(HashMap::new()),
                store,
            }),
        }
    }

    /// Switches app `name` to `version` of its store module (`None`: the latest), loaded and
    /// checked before it becomes current. The new version, or why not.
    pub async fn replace_version(
        &self,
        name: &str,
        version: Option<String>,
    ) -> Result<String, ReplaceError> {
        use hyper::StatusCode;
        let Some(pool) = self.inner.apps.get(name) else {
            return Err(replace_error(
                StatusCode::NOT_FOUND,
                format!("no app named {name}"),
            ));
        };
        let (Some(module_name), Some(store)) = (&pool.store_name, &self.inner.store) else {
            return Err(replace_error(
                StatusCode::CONFLICT,
                format!("app \"{name}\" is served from a component file, not the module store"),
            ));
        };
        let reference = warden::ModuleRef::new(module_name, version.as_deref())
            .map_err(|e| replace_error(StatusCode::BAD_REQUEST, e.to_string()))?;
        // Loading compiles (or reads the precompiled cache): off the async workers.
        let (runtime, store) = (self.inner.runtime.clone(), store.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            runtime.load_from_store(store.as_ref(), &reference)
        })
        .await
        .map_err(|e| replace_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            let status = match &e {
                warden::Error::Store(
                    warden::StoreError::UnknownName { .. }
                    | warden::StoreError::UnknownVersion { .. }
                    | warden::StoreError::NoVersions { .. },
                ) => StatusCode::NOT_FOUND,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            replace_error(status, e.to_string())
        })?;
        let what = format!("`{module_name}@{}`", loaded.version);
        super::check_proxy(&loaded.module, &what)
            .map_err(|m| replace_error(StatusCode::UNPROCESSABLE_ENTITY, m))?;
        // The app's grant holds for every version it serves.
        self.inner
            .runtime
            .check_grant(&loaded.module, pool.config.grant)
            .map_err(|e| {
                replace_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{what} is refused by the app's grant: {e}"),
                )
            })?;
        let new = Arc::new(Generation {
            code: Version {
                module: loaded.module,
                version: Some(loaded.version.clone()),
            },
            idle: Mutex::new(Vec::new()),
        });
        let old = std::mem::replace(
            &mut *pool.current.lock().unwrap_or_else(|p| p.into_inner()),
            new,
        );
        // The old version's idle domains go now; its busy ones when their calls end.
        let idle = std::mem::take(&mut *old.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for domain in idle {
            self.live().remove(&domain.id());
            domain.unload().await;
        }
        Ok(loaded.version)
    }

    /// The store version app `name` serves now (`None`: a file, or no such app).
    pub fn version(&self, name: &str) -> Option<String> {
        self.inner.apps.get(name)?.current().code.version.clone()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<DomainId, Live>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle domain of the app's current version (reuse), or a fresh one; with the
    /// version it belongs to.
    async fn domain(
        &self,
        app: &App,
    ) -> Result<(Domain, Arc<AtomicU64>, Arc<Generation>), Failure> {
        let name = &app.config.name;
        let Some(pool) = self.inner.apps.get(name) else {
            return Err(Failure::Internal(format!(
                "app \"{name}\" has no component"
            )));
        };
        let generation = pool.current();
        loop {
            let idle = generation
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let Some(domain) = idle else { break };
            if domain.is_loaded() {
                let served = self.live().get(&domain.id()).map(|l| l.served.clone());
                if let Some(served) = served {
                    return Ok((domain, served, generation));
                }
            }
            self.live().remove(&domain.id());
        }
        let domain = self
            .inner
            .runtime
            .create_domain(&generation.code.module, pool.config.clone())
            .await
            .map_err(domain_failure)?;
        let served = Arc::new(AtomicU64::new(0));
        self.live().insert(
            domain.id(),
            Live {
                app: name.clone(),
                version: generation.code.version.clone(),
                domain: domain.clone(),
                served: served.clone(),
            },
        );
        Ok((domain, served, generation))
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
    /// The version the domain is of.
    generation: Arc<Generation>,
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
                generation,
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
            // Kept only while its version is current (checked and pushed under the lock a
            // replacement takes).
            let kept = keep
                && apps.inner.apps.get(&c.name).is_some_and(|pool| {
                    let current = pool.current.lock().unwrap_or_else(|p| p.into_inner());
                    let is_current = Arc::ptr_eq(&current, &generation);
                    if is_current {
                        generation
                            .idle
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(domain.clone());
                    }
                    is_current
                });
            if !kept {
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
        let (domain, served, generation) = self.domain(&app).await?;
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
            generation,
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

    async fn replace_version(
        &self,
        app: &str,
        version: Option<String>,
    ) -> Result<String, ReplaceError> {
        Apps::replace_version(self, app, version).await
    }

    fn version(&self, app: &str) -> Option<String> {
        Apps::version(self, app)
    }

    fn domains(&self) -> serde_json::Value {
        let live = self.live();
        let mut list: Vec<_> = live
            .iter()
            .map(|(id, l)| {
                serde_json::json!({
                    "id": id,
                    "app": l.app,
                    "version": l.version,
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
