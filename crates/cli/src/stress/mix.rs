//! The mix: what each cycle runs, drawn from the seed, and how it is run.
//!
//! A cycle is one kind of guest work (a hostile export, a generated module, a user's module)
//! in a fresh domain, with one interference (an abort, a rude abort, an unload mid-call, a
//! dropped future) or a deadline, then an unload. Every choice comes from the cycle's own
//! [`Rng`], derived from the seed and the cycle's number, so a cycle replays on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use warden::{
    CallOptions, CallOutput, Domain, DomainConfig, Module, Outcome, Runtime, Val, WasiConfig,
};

use super::generated::{self, Differential};

/// SplitMix64: small, fast and the same everywhere, which is all a replayable mix needs.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The rng of cycle `n` of a run seeded `seed`: independent of the cycles before it.
    pub fn for_cycle(seed: u64, n: u64) -> Rng {
        let mut r = Rng(seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

/// The bundled hostile guests, one kind each.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hostile {
    Friendly,
    Loop,
    Recursion,
    Hog,
    Grow,
    Trap,
    CriticalForever,
    ConstrainedForever,
    LockLeak,
    LockAbuse,
    Deadlock,
    HandleFlood,
    HungFinalizer,
    StalledIo,
    Sleep,
    WasiIo,
    Embedder,
    ComponentAnswer,
    ComponentWrite,
    ComponentLoop,
    ComponentTrap,
    ComponentHog,
    ComponentEmbedder,
    HttpHello,
    HttpLoop,
}

pub const HOSTILE: &[Hostile] = &[
    Hostile::Friendly,
    Hostile::Loop,
    Hostile::Recursion,
    Hostile::Hog,
    Hostile::Grow,
    Hostile::Trap,
    Hostile::CriticalForever,
    Hostile::ConstrainedForever,
    Hostile::LockLeak,
    Hostile::LockAbuse,
    Hostile::Deadlock,
    Hostile::HandleFlood,
    Hostile::HungFinalizer,
    Hostile::StalledIo,
    Hostile::Sleep,
    Hostile::WasiIo,
    Hostile::Embedder,
    Hostile::ComponentAnswer,
    Hostile::ComponentWrite,
    Hostile::ComponentLoop,
    Hostile::ComponentTrap,
    Hostile::ComponentHog,
    Hostile::ComponentEmbedder,
    Hostile::HttpHello,
    Hostile::HttpLoop,
];

impl Hostile {
    pub fn name(self) -> &'static str {
        match self {
            Hostile::Friendly => "friendly",
            Hostile::Loop => "loop",
            Hostile::Recursion => "recursion",
            Hostile::Hog => "hog",
            Hostile::Grow => "grow",
            Hostile::Trap => "trap",
            Hostile::CriticalForever => "critical_forever",
            Hostile::ConstrainedForever => "constrained_forever",
            Hostile::LockLeak => "lock_leak",
            Hostile::LockAbuse => "lock_abuse",
            Hostile::Deadlock => "deadlock",
            Hostile::HandleFlood => "handle_flood",
            Hostile::HungFinalizer => "hung_finalizer",
            Hostile::StalledIo => "stalled_io",
            Hostile::Sleep => "sleep",
            Hostile::WasiIo => "wasi_io",
            Hostile::Embedder => "embedder",
            Hostile::ComponentAnswer => "component_answer",
            Hostile::ComponentWrite => "component_write",
            Hostile::ComponentLoop => "component_loop",
            Hostile::ComponentTrap => "component_trap",
            Hostile::ComponentHog => "component_hog",
            Hostile::ComponentEmbedder => "component_embedder",
            Hostile::HttpHello => "http_hello",
            Hostile::HttpLoop => "http_loop",
        }
    }

    /// A component guest (called with component values, or through `call_http`).
    fn component(self) -> bool {
        matches!(
            self,
            Hostile::ComponentAnswer
                | Hostile::ComponentWrite
                | Hostile::ComponentLoop
                | Hostile::ComponentTrap
                | Hostile::ComponentHog
                | Hostile::ComponentEmbedder
                | Hostile::HttpHello
                | Hostile::HttpLoop
        )
    }

    fn export(self) -> &'static str {
        match self {
            Hostile::Friendly | Hostile::HandleFlood | Hostile::HungFinalizer => "answer",
            Hostile::Loop => "spin",
            Hostile::Recursion => "recurse",
            Hostile::Hog => "hog",
            Hostile::Grow => "grow",
            Hostile::Trap => "trap",
            Hostile::CriticalForever => "critical_forever",
            Hostile::ConstrainedForever => "constrained_forever",
            Hostile::LockLeak => "lock_leak",
            Hostile::LockAbuse => "lock_twice",
            Hostile::Deadlock => "ab",
            Hostile::StalledIo => "read",
            Hostile::Sleep => "sleep_long",
            Hostile::WasiIo => "write",
            Hostile::Embedder => "embedder",
            Hostile::ComponentAnswer => "answer",
            Hostile::ComponentWrite => "write",
            Hostile::ComponentLoop => "spin",
            Hostile::ComponentTrap => "trap",
            Hostile::ComponentHog => "hog",
            Hostile::ComponentEmbedder => "embedder",
            // Request paths of the bundled wasi:http example.
            Hostile::HttpHello => "/hello",
            Hostile::HttpLoop => "/loop",
        }
    }

    /// Runs until something stops it.
    fn unbounded(self) -> bool {
        matches!(
            self,
            Hostile::Loop
                | Hostile::CriticalForever
                | Hostile::ConstrainedForever
                | Hostile::StalledIo
                | Hostile::Sleep
                | Hostile::ComponentLoop
                | Hostile::HttpLoop
        )
    }

    /// The outcomes the kind may end in when nothing interferes (under the built-in policy).
    fn expected(self) -> &'static [Outcome] {
        use Outcome::*;
        match self {
            Hostile::Friendly
            | Hostile::Grow
            | Hostile::LockLeak
            | Hostile::LockAbuse
            | Hostile::HandleFlood
            | Hostile::HungFinalizer
            | Hostile::WasiIo
            | Hostile::Embedder
            | Hostile::ComponentAnswer
            | Hostile::ComponentWrite
            | Hostile::ComponentEmbedder
            | Hostile::HttpHello => &[Ok],
            Hostile::Deadlock => &[Ok, DeadlockVictim],
            Hostile::Recursion => &[StackOverflow],
            Hostile::Hog | Hostile::ComponentHog => &[OutOfMemory],
            Hostile::Trap | Hostile::ComponentTrap => &[Trap],
            // A deadline that cannot land (a region that never ends) escalates: the abort's
            // timeout makes it rude; the rude abort's makes it an unload.
            Hostile::Loop
            | Hostile::CriticalForever
            | Hostile::ConstrainedForever
            | Hostile::StalledIo
            | Hostile::Sleep
            | Hostile::ComponentLoop
            | Hostile::HttpLoop => &[Timeout, RudeAborted, DomainUnloaded],
        }
    }
}

/// What a cycle runs.
#[derive(Clone, Debug)]
pub enum Work {
    Hostile(Hostile),
    /// A module from wasm-smith, from this seed.
    Generated(u64),
    /// The user's module at this index.
    User(usize),
}

impl Work {
    pub fn name(&self) -> String {
        match self {
            Work::Hostile(h) => h.name().to_string(),
            Work::Generated(_) => "generated".to_string(),
            Work::User(i) => format!("user{i}"),
        }
    }
}

/// What happens to the call while it runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Interference {
    None,
    Abort(Duration),
    RudeAbort(Duration),
    Unload(Duration),
    RudeUnload(Duration),
    DropFuture(Duration),
}

/// A user's module: its name, the module, and the exports a cycle may call (with zeros).
pub type UserModule = (String, Module, Vec<(String, Vec<Val>)>);

/// Everything a cycle needs that is shared by all cycles.
pub struct Fixtures {
    pub hostile: Module,
    pub finalizer: Module,
    pub stall: Module,
    pub io: Module,
    /// The component kinds' guest (`component.wit`, `component.wat`).
    pub component: Module,
    /// The bundled `wasi:http/proxy` example, for the `http_*` kinds.
    pub http: Module,
    /// Where the guests' stdout goes: one writer thread for the whole run.
    pub stdout: warden::stdio::GuestOutput,
    pub user: Vec<UserModule>,
}

impl Fixtures {
    pub fn load(rt: &Runtime, user: &[(String, Vec<u8>)]) -> Result<Fixtures, String> {
        let load = |name: &str, bytes: &[u8]| {
            rt.load_module(bytes)
                .map_err(|e| format!("{name}: cannot load: {e}"))
        };
        let mut users = Vec::new();
        for (name, bytes) in user {
            let module = load(name, bytes)?;
            let calls = generated::callable_exports(&module);
            if calls.is_empty() {
                return Err(format!(
                    "{name}: no export to call (a core function whose parameters are all numbers; components are not mixed yet)"
                ));
            }
            users.push((name.clone(), module, calls));
        }
        Ok(Fixtures {
            hostile: load("stress.wat", include_bytes!("../../guests/stress.wat"))?,
            finalizer: load(
                "finalizer.wat",
                include_bytes!("../../guests/finalizer.wat"),
            )?,
            stall: load("stall.wat", include_bytes!("../../guests/stall.wat"))?,
            io: load("io.wat", include_bytes!("../../guests/io.wat"))?,
            component: load(
                "component.wat",
                &warden::http::example::build_with_deps(
                    &[(
                        "stress-host.wit",
                        include_str!("../../guests/stress-host.wit"),
                    )],
                    include_str!("../../guests/component.wit"),
                    "stress",
                    include_str!("../../guests/component.wat"),
                )
                .map_err(|e| format!("component.wat: {e}"))?,
            )?,
            http: load(
                "the wasi:http example",
                &warden::http::example::component_bytes(),
            )?,
            stdout: warden::stdio::GuestOutput::to_writer(std::io::sink()),
            user: users,
        })
    }
}

/// The knobs of a run that cycles read.
#[derive(Clone)]
pub struct MixConfig {
    pub deadline: Duration,
    pub max_memory: u64,
    pub differential: bool,
    pub generated: bool,
    /// Check outcomes against [`Hostile::expected`] (the built-in policy, no failpoint armed).
    pub check_expected: bool,
    /// The bundled kinds cycles draw from (default: all of [`HOSTILE`]).
    pub kinds: Vec<Hostile>,
}

/// One call's end as the cycle saw it.
pub struct CallEnd {
    pub call: Option<warden::CallId>,
    /// `None` for a dropped future (the ledger has its outcome).
    pub outcome: Option<Outcome>,
    pub latency_ms: f64,
}

#[derive(Default)]
pub struct CycleResult {
    pub kind: String,
    pub calls: Vec<CallEnd>,
    pub violations: Vec<String>,
    pub generated_calls: u64,
    pub differential: Option<Differential>,
    pub failpoint_errors: u64,
}

/// Host resources put in domains, counted on release (handles must be released exactly once).
#[derive(Default)]
pub struct HandleCount {
    pub inserted: AtomicU64,
    pub released: Arc<AtomicU64>,
}

pub struct Cycle {
    pub rt: Runtime,
    pub fixtures: Arc<Fixtures>,
    pub config: Arc<MixConfig>,
    pub handles: Arc<HandleCount>,
    pub rng: Rng,
}

fn interference(rng: &mut Rng) -> Interference {
    let delay = rng.millis(30);
    match rng.below(10) {
        0 => Interference::Abort(delay),
        1 => Interference::RudeAbort(delay),
        2 => Interference::Unload(delay),
        3 => Interference::RudeUnload(delay),
        4 => Interference::DropFuture(delay),
        _ => Interference::None,
    }
}

pub fn choose(rng: &mut Rng, fixtures: &Fixtures, config: &MixConfig) -> Work {
    let roll = rng.below(100);
    if !fixtures.user.is_empty() && roll < 30 {
        return Work::User(rng.below(fixtures.user.len() as u64) as usize);
    }
    if config.generated && roll >= 85 {
        return Work::Generated(rng.next());
    }
    Work::Hostile(*rng.pick(&config.kinds))
}

impl Cycle {
    pub async fn run(mut self) -> CycleResult {
        let work = choose(&mut self.rng, &self.fixtures, &self.config);
        let mut result = CycleResult {
            kind: work.name(),
            ..Default::default()
        };
        match work {
            Work::Hostile(Hostile::Deadlock) => self.deadlock(&mut result).await,
            Work::Hostile(h) => self.hostile(h, &mut result).await,
            Work::Generated(seed) => self.generated(seed, &mut result).await,
            Work::User(i) => self.user(i, &mut result).await,
        }
        result
    }

    fn domain_config(&self, max_handles: usize) -> DomainConfig {
        DomainConfig {
            max_memory: self.config.max_memory,
            max_handles,
            start_deadline: Some(Duration::from_secs(2)),
            wasi: WasiConfig {
                inherit_stdio: false,
                // A stdin nobody writes to: the stalled-I/O guest waits on it for ever.
                stdin: Some(warden::stdio::GuestInput::new(Never)),
                stdout: Some(self.fixtures.stdout.clone()),
                ..WasiConfig::default()
            },
            ..DomainConfig::default()
        }
    }

    async fn create(
        &self,
        module: &Module,
        max_handles: usize,
        result: &mut CycleResult,
    ) -> Option<Domain> {
        match self
            .rt
            .create_domain(module, self.domain_config(max_handles))
            .await
        {
            Ok(d) => Some(d),
            Err(e) => {
                let text = e.to_string();
                if text.contains("failpoint") || !self.config.check_expected {
                    result.failpoint_errors += text.contains("failpoint") as u64;
                } else if !(self.rt.is_exiting() || self.rt.is_disabled()) {
                    result.violations.push(format!(
                        "{}: creating its domain failed: {text}",
                        result.kind
                    ));
                }
                None
            }
        }
    }

    fn options(&mut self, unbounded: bool, interf: Interference) -> CallOptions {
        let deadline = if unbounded && interf == Interference::None || self.rng.chance(0.3) {
            Some(self.config.deadline.min(Duration::from_millis(
                1 + self.rng.below(self.config.deadline.as_millis() as u64),
            )))
        } else {
            // Every call ends: a generous deadline behind whatever else happens.
            Some(Duration::from_secs(5))
        };
        let reserve = self
            .rng
            .chance(0.15)
            .then(|| 4096 * (1 + self.rng.below(1024)));
        CallOptions {
            deadline,
            reserve,
            ..CallOptions::default()
        }
    }

    /// Runs `export` on `domain` with `interf`, and records its end; the output when it
    /// ended `ok` and was joined.
    async fn call(
        &mut self,
        domain: &Domain,
        export: &str,
        args: Args<'_>,
        options: CallOptions,
        interf: Interference,
        result: &mut CycleResult,
    ) -> Option<(Outcome, Option<CallOutput>)> {
        let started = Instant::now();
        if let Interference::DropFuture(after) = interf {
            let fut = async {
                match args {
                    Args::Core(args) => domain.invoke(export, args, options).await,
                    Args::Component => domain.invoke_component(export, &[], options).await,
                }
            };
            let outcome = match tokio::time::timeout(after, fut).await {
                Ok(Ok(_)) => Some(Outcome::Ok),
                Ok(Err(warden::Error::Call(e))) => Some(e.outcome()),
                Ok(Err(e)) => {
                    result
                        .violations
                        .push(format!("{}: invoke({export}) refused: {e}", result.kind));
                    return None;
                }
                Err(_) => None,
            };
            result.calls.push(CallEnd {
                call: None,
                outcome,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
            });
            return outcome.map(|o| (o, None));
        }
        let handle = match args {
            Args::Core(args) => domain.call(export, args, options),
            Args::Component => domain.call_component(export, &[], options),
        };
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                result
                    .violations
                    .push(format!("{}: call({export}) refused: {e}", result.kind));
                return None;
            }
        };
        let id = handle.id();
        // Aborts go through the handle before it is joined (an abort of a call that has
        // already ended is a no-op, which is part of the mix too).
        let unloader = match interf {
            Interference::Abort(after) | Interference::RudeAbort(after) => {
                tokio::time::sleep(after).await;
                if matches!(interf, Interference::RudeAbort(_)) {
                    handle.rude_abort();
                } else {
                    handle.abort();
                }
                None
            }
            Interference::Unload(after) | Interference::RudeUnload(after) => {
                let rude = matches!(interf, Interference::RudeUnload(_));
                let d = domain.clone();
                Some(tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if rude {
                        d.rude_unload().await;
                    } else {
                        d.unload().await;
                    }
                }))
            }
            _ => None,
        };
        let (outcome, output) = match handle.join().await {
            Ok(out) => (Outcome::Ok, Some(out)),
            Err(e) => (e.outcome(), None),
        };
        if let Some(t) = unloader {
            let _ = t.await;
        }
        result.calls.push(CallEnd {
            call: Some(id),
            outcome: Some(outcome),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        });
        Some((outcome, output))
    }

    /// Sends a GET of `path` to the `wasi:http` domain with `interf` (an abort or an unload;
    /// the others are not the HTTP path's), reads the response's body, and records the call's
    /// end; the response's status when there was one.
    async fn http(
        &mut self,
        domain: &Domain,
        path: &str,
        options: CallOptions,
        interf: Interference,
        result: &mut CycleResult,
    ) -> Option<(Outcome, Option<u16>)> {
        use http_body_util::BodyExt;
        let started = Instant::now();
        let request = hyper::Request::builder()
            .uri(format!("http://localhost{path}"))
            .body(warden::http::body_from_bytes(bytes::Bytes::new()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                result
                    .violations
                    .push(format!("{}: request: {e}", result.kind));
                return None;
            }
        };
        let mut call = match domain.call_http(request, options) {
            Ok(c) => c,
            Err(e) => {
                result
                    .violations
                    .push(format!("{}: call_http({path}) refused: {e}", result.kind));
                return None;
            }
        };
        let id = call.id();
        let unloader = match interf {
            Interference::Unload(after) | Interference::RudeUnload(after) => {
                let rude = matches!(interf, Interference::RudeUnload(_));
                let d = domain.clone();
                Some(tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if rude {
                        d.rude_unload().await;
                    } else {
                        d.unload().await;
                    }
                }))
            }
            _ => None,
        };
        // As for a core call: the abort goes in after its delay, before the answer is read
        // (an abort of a call that has already ended is a no-op).
        if let Interference::Abort(after) = interf {
            tokio::time::sleep(after).await;
            call.abort();
        }
        let status = async {
            let response = call.response().await.ok()?;
            let status = response.status().as_u16();
            response.into_body().collect().await.ok()?;
            Some(status)
        }
        .await;
        let outcome = match call.into_handle().join().await {
            Ok(_) => Outcome::Ok,
            Err(e) => e.outcome(),
        };
        if let Some(t) = unloader {
            let _ = t.await;
        }
        result.calls.push(CallEnd {
            call: Some(id),
            outcome: Some(outcome),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        });
        Some((outcome, status))
    }

    fn check(
        &self,
        h: Hostile,
        interf: Interference,
        options: &CallOptions,
        outcome: Option<Outcome>,
        result: &mut CycleResult,
    ) {
        let Some(outcome) = outcome else { return };
        if !self.config.check_expected || self.rt.is_exiting() || self.rt.is_disabled() {
            return;
        }
        let mut fine = h.expected().contains(&outcome);
        fine |= options.reserve.is_some() && outcome == Outcome::InsufficientMemory;
        // A deadline shorter than the guest's work, or any interference, may end it instead.
        fine |= matches!(
            outcome,
            Outcome::Timeout | Outcome::RudeAborted | Outcome::DomainUnloaded
        ) && options.deadline.is_some_and(|d| d < Duration::from_secs(5));
        if interf != Interference::None {
            fine |= matches!(
                outcome,
                Outcome::Aborted
                    | Outcome::RudeAborted
                    | Outcome::DomainUnloaded
                    | Outcome::Timeout
            );
        }
        if !fine {
            result.violations.push(format!(
                "{}: outcome {outcome} is not what it should be ({:?}, with {interf:?}, deadline {:?})",
                h.name(),
                h.expected(),
                options.deadline
            ));
        }
    }

    async fn hostile(&mut self, h: Hostile, result: &mut CycleResult) {
        let module = match h {
            Hostile::HungFinalizer => self.fixtures.finalizer.clone(),
            Hostile::StalledIo => self.fixtures.stall.clone(),
            Hostile::WasiIo | Hostile::Embedder => self.fixtures.io.clone(),
            Hostile::HttpHello | Hostile::HttpLoop => self.fixtures.http.clone(),
            _ if h.component() => self.fixtures.component.clone(),
            _ => self.fixtures.hostile.clone(),
        };
        let quota = 16 + self.rng.below(48) as usize;
        let Some(domain) = self.create(&module, quota, result).await else {
            return;
        };
        let mut inserted = 0;
        if h == Hostile::HandleFlood {
            inserted = self.flood(&domain, quota, result);
        }
        let mut interf = interference(&mut self.rng);
        let http = matches!(h, Hostile::HttpHello | Hostile::HttpLoop);
        if http
            && matches!(
                interf,
                Interference::RudeAbort(_) | Interference::DropFuture(_)
            )
        {
            interf = Interference::None;
        }
        let options = self.options(h.unbounded(), interf);
        let outcome = if http {
            let ended = self
                .http(&domain, h.export(), options.clone(), interf, result)
                .await;
            if let Some((Outcome::Ok, status)) = ended
                && status != Some(200)
                && self.config.check_expected
            {
                result.violations.push(format!(
                    "{}: the call ended ok, yet its response was {status:?}, not 200",
                    h.name()
                ));
            }
            ended.map(|e| e.0)
        } else {
            let args = if h.component() {
                Args::Component
            } else {
                Args::Core(&[])
            };
            let ended = self
                .call(&domain, h.export(), args, options.clone(), interf, result)
                .await;
            // The typed answers, when nothing was injected.
            let want = match h {
                Hostile::ComponentAnswer | Hostile::ComponentEmbedder => Some(42),
                Hostile::ComponentWrite => Some(0),
                _ => None,
            };
            if let Some(want) = want
                && let Some((Outcome::Ok, Some(out))) = &ended
                && self.config.check_expected
                && out.component_values != [wasmtime::component::Val::U32(want)]
            {
                result.violations.push(format!(
                    "{}: answered {:?}, not [U32({want})]",
                    h.name(),
                    out.component_values
                ));
            }
            ended.map(|e| e.0)
        };
        self.check(h, interf, &options, outcome, result);
        let report = if self.rng.chance(0.2) {
            domain.rude_unload().await
        } else {
            domain.unload().await
        };
        if h == Hostile::HandleFlood
            && report.handles_released != inserted
            && self.config.check_expected
        {
            result.violations.push(format!(
                "handle_flood: {inserted} handles inserted, the unload released {}",
                report.handles_released
            ));
        }
        if h == Hostile::HungFinalizer && report.finalizer_ran {
            result.violations.push(
                "hung_finalizer: its finalizer never returns, yet the unload says it ran".into(),
            );
        }
    }

    /// Fills the domain's handle table to its quota: the one past it must be refused, and every
    /// resource must be released once (on refusal, or at unload).
    fn flood(&mut self, domain: &Domain, quota: usize, result: &mut CycleResult) -> u64 {
        let mut accepted = 0u64;
        for i in 0..=quota {
            self.handles.inserted.fetch_add(1, Ordering::Relaxed);
            let released = self.handles.released.clone();
            match domain.insert_handle(i, move |_| {
                released.fetch_add(1, Ordering::Relaxed);
            }) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    if i < quota && !e.to_string().contains("quota") {
                        result
                            .violations
                            .push(format!("handle_flood: insert {i} of {quota} refused: {e}"));
                    } else if i < quota {
                        // Only an injected failure refuses an insert below the quota.
                        result.failpoint_errors += 1;
                    }
                }
            }
        }
        if accepted > quota as u64 {
            result.violations.push(format!(
                "handle_flood: {accepted} handles accepted past a quota of {quota}"
            ));
        }
        accepted
    }

    async fn deadlock(&mut self, result: &mut CycleResult) {
        let module = self.fixtures.hostile.clone();
        let Some(a) = self.create(&module, 16, result).await else {
            return;
        };
        let Some(b) = self.create(&module, 16, result).await else {
            return;
        };
        let options = CallOptions {
            deadline: Some(Duration::from_secs(5)),
            ..CallOptions::default()
        };
        let started = Instant::now();
        let (ha, hb) = match (
            a.call("ab", &[], options.clone()),
            b.call("ba", &[], options.clone()),
        ) {
            (Ok(x), Ok(y)) => (x, y),
            (x, y) => {
                result.violations.push(format!(
                    "deadlock: calls refused: {:?} {:?}",
                    x.err(),
                    y.err()
                ));
                return;
            }
        };
        let (ia, ib) = (ha.id(), hb.id());
        let (ra, rb) = tokio::join!(ha.join(), hb.join());
        for (id, r) in [(ia, ra), (ib, rb)] {
            let outcome = match r {
                Ok(_) => Outcome::Ok,
                Err(e) => e.outcome(),
            };
            self.check(
                Hostile::Deadlock,
                Interference::None,
                &options,
                Some(outcome),
                result,
            );
            result.calls.push(CallEnd {
                call: Some(id),
                outcome: Some(outcome),
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
            });
        }
        tokio::join!(a.unload(), b.unload());
    }

    async fn generated(&mut self, seed: u64, result: &mut CycleResult) {
        let limits = generated::Limits {
            deadline: Duration::from_millis(20),
            max_memory: generated::MAX_MEMORY,
        };
        let bytes = match generated::module(seed, limits.max_memory) {
            Ok(b) => b,
            Err(e) => {
                result.violations.push(format!(
                    "generated: wasm-smith failed for seed {seed:#x}: {e}"
                ));
                return;
            }
        };
        let Ok(module) = self.rt.load_module(&bytes) else {
            // A valid module Warden refuses to compile is its own finding, not a crash.
            result.violations.push(format!(
                "generated: a valid module (seed {seed:#x}) failed to load"
            ));
            return;
        };
        let exports = generated::callable_exports(&module);
        let warden_kinds =
            generated::run_in_warden(&self.rt, &module, &exports, &limits, &mut result.calls).await;
        result.generated_calls += exports.len() as u64;
        if self.config.differential && self.config.check_expected {
            let bare = generated::run_bare(&bytes, &exports, &limits).await;
            result.differential = Some(generated::compare(&warden_kinds, &bare, seed, &bytes));
        }
    }

    async fn user(&mut self, i: usize, result: &mut CycleResult) {
        let (_, module, exports) = &self.fixtures.user[i];
        let module = module.clone();
        let (export, args) = self.rng.pick(exports).clone();
        let Some(domain) = self.create(&module, 64, result).await else {
            return;
        };
        let interf = interference(&mut self.rng);
        let options = self.options(true, interf);
        self.call(&domain, &export, Args::Core(&args), options, interf, result)
            .await;
        domain.unload().await;
    }
}

/// How a call's arguments are passed: core values, or none to a component's export.
#[derive(Copy, Clone)]
enum Args<'a> {
    Core(&'a [Val]),
    Component,
}

/// A reader that never has bytes: the stalled-I/O guest's stdin. Its read is a host wait that
/// only an abort (or a deadline, or an unload) ends.
struct Never;

impl tokio::io::AsyncRead for Never {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

/// The embedder's typed functions for component guests (`guests/stress-host.wit`).
mod bindings {
    wasmtime::component::bindgen!({
        path: "guests/stress-host.wit",
        world: "embedder",
        imports: { "warden:stress-host/host.pause": async },
    });
}

/// The per-domain state of the `component_embedder` kind's interface (it needs none).
struct StressHost;

impl bindings::warden::stress_host::host::Host for warden::host::ComponentHost<'_, StressHost> {
    fn add(&mut self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }

    async fn pause(&mut self, ms: u32) -> u32 {
        tokio::time::sleep(Duration::from_millis(u64::from(ms.min(1000)))).await;
        0
    }
}

/// The embedder's functions the `embedder` kind calls (one synchronous, one asynchronous: a
/// parked wait an abort may end), and the same two typed from WIT for the
/// `component_embedder` kind.
pub fn host_functions() -> warden::HostFunctions {
    let mut f = warden::HostFunctions::new();
    f.component(
        "warden:stress-host/host",
        |_| StressHost,
        |linker, get| {
            bindings::warden::stress_host::host::add_to_linker::<
                _,
                warden::host::Embedded<StressHost>,
            >(linker, get)
        },
    );
    f.func("stress", "add", |_, (a, b): (i32, i32)| {
        Ok(a.wrapping_add(b))
    });
    f.func_async("stress", "pause", |_, (ms,): (i64,)| async move {
        tokio::time::sleep(Duration::from_millis(ms.clamp(0, 1000) as u64)).await;
        Ok(0i32)
    });
    f
}
