//! The wasmtime engine Warden runs guests on: async calls, epoch interruption driven by one
//! ticker thread, the pooling allocator (with a fallback), bounded wasm stacks, and a module
//! cache keyed by content digest.
//!
//! A [`Module`] is a core module or a component (`wasmtime::component`): `load_module`
//! detects which from the bytes (after WAT text is parsed), and both pass the same bounds
//! (size, function count, compile time) and share the digest cache. With
//! [`EngineConfig::cache_dir`] a miss of the digest cache looks in the on-disk precompiled
//! cache ([`precompiled`](crate::precompiled)) before compiling.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Error;

/// Engine settings. The defaults suit a server: 1 ms epoch tick, 512 KiB wasm stack.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How often the epoch advances: the granularity of deadlines and the upper bound on how
    /// long a spinning guest runs before it notices a deliverable abort. Default 1 ms.
    pub tick: Duration,
    /// Maximum wasm stack per call; deeper recursion is a `stack_overflow` outcome.
    /// Default 512 KiB.
    pub max_wasm_stack: usize,
    /// Host headroom on top of the wasm stack for the async fiber, so host functions never
    /// overflow. Default 1 MiB.
    pub host_stack_headroom: usize,
    /// Use the pooling allocator (falls back to on-demand when its reservation fails).
    pub pooling: bool,
    /// Pool size: how many domains may exist at once when pooling is on. Default 1000.
    pub pool_slots: u32,
    /// Largest linear memory a pool slot can hold. Default 4 GiB (all of wasm32).
    pub pool_max_memory: usize,
    /// Largest module accepted by [`Runtime::load_module`](crate::Runtime::load_module), in
    /// bytes of the input (wasm binary or WAT text). Default 256 MiB.
    pub max_module_bytes: usize,
    /// Most functions (defined plus imported) a module may have; checked before compiling
    /// (for WAT text, on its tokens before it is parsed: parsing text costs far more memory),
    /// since compile time and the compiler's memory grow with the function count. Default
    /// 100,000 (large real programs have tens of thousands).
    pub max_functions: u32,
    /// Bound on compiling one module (turning WAT text into a binary included). Past it, `load_module` gives up with
    /// [`Error::CompileTimeout`](crate::Error::CompileTimeout); the compiler thread cannot
    /// be interrupted, so it finishes in the background and its result is dropped. `None`:
    /// no bound. Default 60 s.
    ///
    /// Not covered: the compiler's own memory, which the process budget does not see. The
    /// size and function-count bounds are what keep it in proportion, and so does the engine's
    /// refusal of sparse memory images: data segments are built into a copy-on-write image at
    /// compile time only when at least half of its span is data (wasmtime's default also
    /// builds any image up to 16 MiB, so a 124-byte module with data 3 MiB apart took ~13 MiB
    /// to compile and kept 3 MiB while loaded). Sparse data is copied in at instantiation.
    pub compile_timeout: Option<Duration>,
    /// Compiled modules kept in the digest cache. Default 64.
    pub module_cache_entries: usize,
    /// The precompiled cache's directory (created if missing): compiled code is kept there
    /// and loaded again only after an integrity check (see [`precompiled`](crate::precompiled)).
    /// `None` (the default): every runtime compiles what it loads. The directory must be
    /// writable only by the host: the check is a digest, not a signature.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
            host_stack_headroom: 1 << 20,
            pooling: true,
            pool_slots: 1000,
            pool_max_memory: 4 << 30,
            max_module_bytes: 256 << 20,
            max_functions: 100_000,
            compile_timeout: Some(Duration::from_secs(60)),
            module_cache_entries: 64,
            cache_dir: None,
        }
    }
}

/// How instances are allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved pool of instance slots.
    Pooling,
    /// Allocation per instance; `reason` says why pooling is not in use.
    OnDemand {
        /// Why pooling was not used (`disabled by configuration` or the reservation error).
        reason: String,
    },
}

/// A compiled guest, a core module or a component, with its content digest. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    pub(crate) code: Code,
    digest: Arc<str>,
    /// Its export signatures, shared by its clones and its domains.
    pub(crate) signatures: Arc<crate::signature::Signatures>,
    /// Whether it exports its finalizer: looked up once, not at every unload.
    finalizer: bool,
}

/// What a [`Module`] holds.
#[derive(Clone)]
pub(crate) enum Code {
    Core(wasmtime::Module),
    Component(crate::component::CompiledComponent),
}

impl Module {
    /// Hex SHA-256 of the bytes the module was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether this is a component (else a core module).
    pub fn is_component(&self) -> bool {
        matches!(self.code, Code::Component(_))
    }

    /// The underlying wasmtime core module; `None` for a component.
    pub fn wasmtime(&self) -> Option<&wasmtime::Module> {
        match &self.code {
            Code::Core(m) => Some(m),
            Code::Component(_) => None,
        }
    }

    /// The underlying wasmtime component; `None` for a core module.
    pub fn component(&self) -> Option<&wasmtime::component::Component> {
        match &self.code {
            Code::Core(_) => None,
            Code::Component(c) => Some(&c.component),
        }
    }

    /// Finds a component's function export by name (see
    /// [`component`](crate::component) for the names accepted): its full path and type.
    /// [`Error::NoSuchExport`] when nothing matches (or this is a core module),
    /// [`Error::AmbiguousExport`] when several functions have the name given.
    pub fn component_func(&self, name: &str) -> Result<crate::ComponentExport, Error> {
        match &self.code {
            Code::Component(c) => c.resolve(name).map(|(export, _)| export),
            Code::Core(_) => Err(Error::NoSuchExport(format!(
                "{name}` in a component; this is a core module: look it up with `Module::wasmtime"
            ))),
        }
    }

    /// Whether the guest exports its finalizer ([`FINALIZER`](crate::worker) for a core
    /// module, `warden-on-unload` for a component).
    pub(crate) fn has_finalizer(&self) -> bool {
        self.finalizer
    }

    fn exports_finalizer(code: &Code) -> bool {
        match code {
            Code::Core(m) => m.get_export(crate::worker::FINALIZER).is_some(),
            Code::Component(c) => c.finalizer.is_some(),
        }
    }
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("digest", &self.digest)
            .finish()
    }
}

/// The engine, its ticker and its module cache.
pub(crate) struct WardenEngine {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) allocator: Allocator,
    config: EngineConfig,
    cache: Mutex<HashMap<Arc<str>, Module>>,
    /// The on-disk precompiled cache, when configured.
    artifacts: Option<crate::precompiled::ArtifactCache>,
    ticker: Ticker,
    /// Ticks counted by the ticker thread: the scheduler's coarse clock.
    pub(crate) ticks: Arc<AtomicU64>,
}

impl WardenEngine {
    pub(crate) fn new(config: &EngineConfig) -> Result<Self, Error> {
        if config.tick.is_zero() {
            return Err(Error::Config("epoch tick must be greater than zero".into()));
        }
        if config.max_wasm_stack < 64 << 10 {
            return Err(Error::Config(format!(
                "max wasm stack of {} bytes is too small (at least 64 KiB)",
                config.max_wasm_stack
            )));
        }
        let mut base = wasmtime::Config::new();
        base.epoch_interruption(true)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
            .max_wasm_stack(config.max_wasm_stack)
            .async_stack_size(config.max_wasm_stack + config.host_stack_headroom)
            // No image "always allowed" regardless of density: compile memory follows the
            // data's size, not the span a few bytes of data are spread over (issue 14).
            .memory_guaranteed_dense_image_size(0);

        let (engine, allocator) = if config.pooling {
            let mut pooled = base.clone();
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_core_instances(config.pool_slots)
                .total_memories(config.pool_slots)
                .total_tables(config.pool_slots)
                .total_stacks(config.pool_slots)
                .max_memory_size(config.pool_max_memory)
                // Return memory to the OS on reuse: zero growth across create/unload cycles.
                .linear_memory_keep_resident(0)
                .table_keep_resident(0);
            pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
            match wasmtime::Engine::new(&pooled) {
                Ok(engine) => (engine, Allocator::Pooling),
                Err(e) => {
                    let reason = format!("pooling allocator unavailable: {e:#}");
                    tracing::warn!("{reason}; falling back to on-demand allocation");
                    (on_demand(&base)?, Allocator::OnDemand { reason })
                }
            }
        } else {
            (
                on_demand(&base)?,
                Allocator::OnDemand {
                    reason: "disabled by configuration".into(),
                },
            )
        };
        let artifacts = match &config.cache_dir {
            Some(dir) => {
                let pooling = allocator == Allocator::Pooling;
                let fingerprint = crate::precompiled::fingerprint(&engine, config, pooling);
                Some(crate::precompiled::ArtifactCache::open(dir, fingerprint)?)
            }
            None => None,
        };
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = Ticker::start(engine.clone(), config.tick, ticks.clone())?;
        Ok(WardenEngine {
            engine,
            allocator,
            config: config.clone(),
            cache: Mutex::new(HashMap::new()),
            artifacts,
            ticker,
            ticks,
        })
    }

    /// Compiles (or fetches from the digest cache, then the precompiled cache) a module from
    /// wasm bytes or WAT text. A rejected artifact is reported on `events`.
    pub(crate) fn load(
        &self,
        bytes: &[u8],
        events: &crate::events::EventBus,
    ) -> Result<Module, Error> {
        if bytes.len() > self.config.max_module_bytes {
            return Err(Error::ModuleTooLarge {
                size: bytes.len(),
                limit: self.config.max_module_bytes,
            });
        }
        let source: [u8; 32] = Sha256::digest(bytes).into();
        let digest: Arc<str> = hex(&source).into();
        if let Some(m) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok(m.clone());
        }
        // Compile outside the cache lock: compilation can take long.
        let code = match &self.artifacts {
            None => self.compile(bytes)?,
            Some(artifacts) => match artifacts.get(&self.engine, &digest, &source) {
                crate::precompiled::Lookup::Hit(code) => code,
                found => {
                    if let crate::precompiled::Lookup::Rejected(r) = found {
                        events.emit(None, None, || crate::events::EventKind::ArtifactRejected {
                            module: digest.to_string(),
                            reason: r.reason,
                            detail: r.detail,
                        });
                    }
                    let code = self.compile(bytes)?;
                    artifacts.put(&digest, &source, &code);
                    code
                }
            },
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.config.module_cache_entries {
            // Evict an arbitrary entry: the cache is a convenience, never a leak.
            if let Some(k) = cache.keys().next().cloned() {
                cache.remove(&k);
            }
        }
        let module = Module {
            finalizer: Module::exports_finalizer(&code),
            code,
            digest: digest.clone(),
            signatures: Default::default(),
        };
        cache.insert(digest, module.clone());
        Ok(module)
    }

    /// Compiles `bytes` within the configured bounds: the function count first (cheap, no
    /// compilation; for WAT text, counted on the text before it is parsed, since parsing
    /// text costs tens of bytes per byte of input), then the parse and the compile on their
    /// own thread, bounded by `compile_timeout`.
    fn compile(&self, bytes: &[u8]) -> Result<Code, Error> {
        let max_functions = self.config.max_functions;
        let engine = self.engine.clone();
        let work = move |bytes: &[u8]| -> Result<Code, Error> {
            let too_many = |count| Error::TooManyFunctions {
                count,
                limit: max_functions,
            };
            if !bytes.starts_with(b"\0asm")
                && let Ok(text) = std::str::from_utf8(bytes)
            {
                let count = count_text_functions(text);
                if count > max_functions {
                    return Err(too_many(count));
                }
            }
            let wasm = wat::parse_bytes(bytes).map_err(|e| Error::InvalidModule(e.into()))?;
            let functions = count_functions(&wasm)?;
            if functions > max_functions {
                return Err(too_many(functions));
            }
            let invalid = |e: wasmtime::Error| Error::InvalidModule(crate::error::cause(e));
            if wasmparser::Parser::is_component(&wasm) {
                let component =
                    wasmtime::component::Component::new(&engine, &wasm).map_err(invalid)?;
                return Ok(Code::Component(crate::component::CompiledComponent::new(
                    &engine, component,
                )));
            }
            wasmtime::Module::new(&engine, &wasm)
                .map(Code::Core)
                .map_err(invalid)
        };
        let Some(limit) = self.config.compile_timeout else {
            return work(bytes);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let bytes = bytes.to_vec();
        std::thread::Builder::new()
            .name("warden-compile".into())
            .spawn(move || {
                let _ = tx.send(work(&bytes));
            })
            .map_err(|source| {
                Error::Engine(Box::new(crate::error::Doing {
                    what: "cannot start a compiler thread",
                    source,
                }))
            })?;
        match rx.recv_timeout(limit) {
            Ok(compiled) => compiled,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::CompileTimeout { limit }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::Engine(
                "the compiler thread ended without a result".into(),
            )),
        }
    }

    /// Forces every running store to its epoch check now (used to deliver aborts promptly).
    pub(crate) fn poke(&self) {
        self.engine.increment_epoch();
    }

    /// The precompiled cache's counters; `None` when it is not configured.
    pub(crate) fn artifact_stats(&self) -> Option<crate::precompiled::CacheStats> {
        self.artifacts.as_ref().map(|a| a.stats())
    }

    pub(crate) fn cached_modules(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn stop(&self) {
        self.ticker.stop();
    }
}

fn on_demand(base: &wasmtime::Config) -> Result<wasmtime::Engine, Error> {
    let mut c = base.clone();
    c.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
    wasmtime::Engine::new(&c).map_err(|e| Error::Engine(crate::error::cause(e)))
}

/// Functions a module defines and imports, read from its sections without compiling it. For
/// a component: the core functions of every core module nested in it (its lifted and
/// lowered component functions are not counted; each wraps a core function or import).
fn count_functions(wasm: &[u8]) -> Result<u32, Error> {
    let invalid = |e: wasmparser::BinaryReaderError| Error::InvalidModule(Box::new(e));
    let mut count: u32 = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            wasmparser::Payload::FunctionSection(s) => count = count.saturating_add(s.count()),
            wasmparser::Payload::ImportSection(s) => {
                for import in s.into_imports() {
                    if let wasmparser::TypeRef::Func(_) = import.map_err(invalid)?.ty {
                        count = count.saturating_add(1);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(count)
}

/// Functions WAT text defines and imports, counted on its tokens without parsing it (in
/// constant memory): each `(func` that is a field of a module (`(module (func ..))`, or at
/// the top level of a module written without `(module`), of a core module in a component
/// (`(core module (func ..))`), or of an import. `(export "f" (func $f))`, `(type (func))`
/// and references (`(ref func)`) are not functions. Text that does not lex is counted up to
/// where it stops; the parser reports the error.
fn count_text_functions(text: &str) -> u32 {
    use wast::lexer::{Lexer, TokenKind};
    // The head keyword of each open list, as far as a field can be nested; deeper lists
    // only need their depth.
    const TRACKED: usize = 16;
    let mut heads: Vec<bool> = Vec::new();
    let mut untracked = 0usize;
    let mut open = false;
    // Just after `(core`: only `(core module` holds functions.
    let mut after_core = false;
    let mut count: u32 = 0;
    let lexer = Lexer::new(text);
    let mut pos = 0;
    while let Ok(Some(token)) = lexer.parse(&mut pos) {
        match token.kind {
            TokenKind::Whitespace | TokenKind::LineComment | TokenKind::BlockComment => continue,
            TokenKind::LParen => {
                if open {
                    // `((`: a list without a head keyword holds no fields.
                    push(&mut heads, &mut untracked, false, TRACKED);
                }
                open = true;
                continue;
            }
            TokenKind::Keyword if open => {
                let keyword = token.keyword(text);
                // The list this one opens in: `(module`, `(core module`, `(import` or none.
                let holds_fields = match heads.last() {
                    None => untracked == 0,
                    Some(&holds) => holds && untracked == 0,
                };
                if keyword == "func" && holds_fields {
                    count = count.saturating_add(1);
                }
                let fields = matches!(keyword, "module" | "core" | "import");
                push(&mut heads, &mut untracked, fields, TRACKED);
                after_core = keyword == "core";
                open = false;
                continue;
            }
            TokenKind::Keyword if after_core => {
                if token.keyword(text) != "module"
                    && untracked == 0
                    && let Some(last) = heads.last_mut()
                {
                    *last = false;
                }
            }
            TokenKind::RParen => {
                if open {
                    // `()`
                    open = false;
                    continue;
                }
                if untracked > 0 {
                    untracked -= 1;
                } else {
                    heads.pop();
                }
            }
            _ if open => push(&mut heads, &mut untracked, false, TRACKED),
            _ => {}
        }
        open = false;
        after_core = false;
    }
    count
}

fn push(heads: &mut Vec<bool>, untracked: &mut usize, holds_fields: bool, tracked: usize) {
    if heads.len() < tracked && *untracked == 0 {
        heads.push(holds_fields);
    } else {
        *untracked += 1;
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one epoch ticker thread of an engine.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ticker {
    fn start(
        engine: wasmtime::Engine,
        tick: Duration,
        ticks: Arc<AtomicU64>,
    ) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(tick);
                    // The clock first: a call that sees a new epoch sees the tick counted.
                    ticks.fetch_add(1, Ordering::Release);
                    engine.increment_epoch();
                }
            })
            .map_err(|source| {
                Error::Engine(Box::new(crate::error::Doing {
                    what: "cannot start the epoch ticker",
                    source,
                }))
            })?;
        Ok(Ticker {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::count_text_functions;

    #[test]
    fn text_functions_are_counted_on_tokens() {
        assert_eq!(count_text_functions("(module)"), 0);
        assert_eq!(count_text_functions("(func) (func $f (param i32))"), 2);
        assert_eq!(
            count_text_functions(
                r#"(module ;; (func)
                     (; (func) ;) (type (func)) (import "a" "b" (func (type 0)))
                     (func (export "f") (local (ref null func)) (block (nop)))
                     (export "g" (func 1)) (elem (i32.const 0) func 1) (@custom "x" "(func)"))"#
            ),
            2
        );
        assert_eq!(
            count_text_functions(
                r#"(component (core module (func) (func)) (core type (func))
                     (core func (canon lower (func 0))) (func (canon lift (core func 0))))"#
            ),
            2
        );
        // Text that stops lexing is counted as far as it goes.
        assert_eq!(count_text_functions("(module (func) \"unterminated"), 1);
    }
}
