//! Generated guests: random valid modules from wasm-smith (the way wasmtime fuzzes), run in a
//! domain under tight limits, and — in differential mode — in bare wasmtime configured the same
//! way (async, epoch interruption, no fuel), where the outcome must be of the same kind.

use arbitrary::Unstructured;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use warden::{CallOptions, DomainConfig, Module, Outcome, Runtime, Val};
use wasmtime::{ResourceLimiter, Store, ValType};

use super::mix::{CallEnd, Rng};

/// The kind of an outcome, the level at which Warden and bare wasmtime must agree.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Ok,
    Trap,
    Timeout,
    Oom,
    StackOverflow,
    /// Instantiation refused (limits) or failed before guest code.
    Refused,
    /// Anything else (Warden only: aborted, unloaded, …).
    Other,
}

/// The linear memory a generated guest's domain may hold, and the most any of its memories may
/// declare (see [`module`]).
pub const MAX_MEMORY: u64 = 1 << 20;

/// Tight limits for generated guests.
pub struct Limits {
    pub deadline: Duration,
    pub max_memory: u64,
}

/// One generated module's comparison.
#[derive(Default, Clone, Debug)]
pub struct Differential {
    pub compared: u64,
    pub agreed: u64,
    /// A timeout on one side only: a run close to the deadline, not a disagreement.
    pub inconclusive: u64,
    pub mismatches: Vec<String>,
}

/// A random valid module for `seed`: no imports, a few functions, every function exported,
/// small memories and tables, only the proposals Warden's engine runs by default.
///
/// No memory may start or end larger than `max_memory` (the domain's limit): past it the
/// module could never be instantiated, yet compiling it still costs memory in proportion to
/// its initial memory, not to its bytes. Wasmtime builds a dense copy-on-write image of the
/// data segments when they fit the initial memory (up to 16 MiB by default), and compiling
/// copies it a few times: a 124-byte module with data at 3 MiB in a 59-page memory took
/// ~13 MiB of heap to compile, twice with `--differential` (issue 14's peak-RSS spikes).
pub fn module(seed: u64, max_memory: u64) -> Result<Vec<u8>, String> {
    let mut rng = Rng::new(seed);
    let mut bytes = vec![0u8; 2048 + rng.below(4096) as usize];
    for chunk in bytes.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let config = wasm_smith::Config {
        max_imports: 0,
        min_funcs: 1,
        max_funcs: 8,
        max_exports: 16,
        export_everything: true,
        max_memories: 1,
        max_tables: 1,
        max_table_elements: 100,
        max_memory32_bytes: max_memory,
        max_instructions: 200,
        max_data_segments: 4,
        max_element_segments: 4,
        max_globals: 8,
        max_tags: 0,
        allow_start_export: false,
        simd_enabled: false,
        relaxed_simd_enabled: false,
        threads_enabled: false,
        exceptions_enabled: false,
        gc_enabled: false,
        tail_call_enabled: false,
        memory64_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        shared_everything_threads_enabled: false,
        custom_descriptors_enabled: false,
        ..wasm_smith::Config::default()
    };
    let mut u = Unstructured::new(&bytes);
    wasm_smith::Module::new(config, &mut u)
        .map(|m| m.to_bytes())
        .map_err(|e| e.to_string())
}

/// Exports a stress run can call: functions whose parameters are all numbers (given zeros).
///
/// A component has none yet: the mix calls core exports only.
pub fn callable_exports(module: &warden::Module) -> Vec<(String, Vec<Val>)> {
    let mut out = Vec::new();
    let Some(module) = module.wasmtime() else {
        return out;
    };
    for export in module.exports() {
        let Some(func) = export.ty().func().cloned() else {
            continue;
        };
        let args: Option<Vec<Val>> = func
            .params()
            .map(|p| match p {
                ValType::I32 => Some(Val::I32(0)),
                ValType::I64 => Some(Val::I64(0)),
                ValType::F32 => Some(Val::F32(0)),
                ValType::F64 => Some(Val::F64(0)),
                _ => None,
            })
            .collect();
        if let Some(args) = args
            && export.name() != "warden_on_unload"
        {
            out.push((export.name().to_string(), args));
        }
    }
    out
}

fn kind_of(outcome: Outcome) -> Kind {
    match outcome {
        Outcome::Ok => Kind::Ok,
        Outcome::Trap => Kind::Trap,
        Outcome::Timeout => Kind::Timeout,
        Outcome::OutOfMemory => Kind::Oom,
        Outcome::StackOverflow => Kind::StackOverflow,
        Outcome::InsufficientMemory => Kind::Refused,
        _ => Kind::Other,
    }
}

fn domain_config(limits: &Limits) -> DomainConfig {
    DomainConfig {
        max_memory: limits.max_memory,
        max_tables: 1,
        start_deadline: Some(limits.deadline),
        ..DomainConfig::default()
    }
}

/// Each export in a fresh domain (so one call's state cannot change the next's outcome, as in
/// the bare run). `None` for the whole list: the domain could not be created.
pub async fn run_in_warden(
    rt: &Runtime,
    module: &Module,
    exports: &[(String, Vec<Val>)],
    limits: &Limits,
    calls: &mut Vec<CallEnd>,
) -> Vec<Kind> {
    let mut kinds = Vec::new();
    for (name, args) in exports {
        let domain = match rt.create_domain(module, domain_config(limits)).await {
            Ok(d) => d,
            Err(warden::Error::Call(e)) => {
                kinds.push(kind_of(e.outcome()));
                continue;
            }
            Err(_) => {
                kinds.push(Kind::Refused);
                continue;
            }
        };
        let started = Instant::now();
        let options = CallOptions {
            deadline: Some(limits.deadline),
            ..CallOptions::default()
        };
        let outcome = match domain.call(name, args, options) {
            Ok(h) => {
                let id = h.id();
                let o = match h.join().await {
                    Ok(_) => Outcome::Ok,
                    Err(e) => e.outcome(),
                };
                calls.push(CallEnd {
                    call: Some(id),
                    outcome: Some(o),
                    latency_ms: started.elapsed().as_secs_f64() * 1e3,
                });
                kind_of(o)
            }
            Err(_) => Kind::Refused,
        };
        kinds.push(outcome);
        domain.unload().await;
    }
    kinds
}

/// Limits like a domain's (`DomainConfig`): linear memory against `max_memory`, table
/// elements against `max_table_elements`, one instance, one memory, one table.
struct BareLimiter {
    max_memory: u64,
    max_table_elements: usize,
    denied: bool,
}

impl ResourceLimiter for BareLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) || desired as u64 > self.max_memory {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) || desired > self.max_table_elements {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }
    fn memories(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        1
    }
}

/// The bare engine, configured as Warden's (`EngineConfig::default()`), with its own ticker.
fn bare_engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let defaults = warden::EngineConfig::default();
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
            .max_wasm_stack(defaults.max_wasm_stack)
            .async_stack_size(defaults.max_wasm_stack + defaults.host_stack_headroom)
            .memory_guaranteed_dense_image_size(0);
        let engine =
            wasmtime::Engine::new(&config).expect("the default engine configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("stress-bare-epoch".into())
            .spawn(move || {
                while let Some(e) = ticker.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(defaults.tick);
                }
            })
            .expect("spawning the bare engine's epoch ticker");
        engine
    })
}

/// Each export in a fresh bare store.
pub async fn run_bare(bytes: &[u8], exports: &[(String, Vec<Val>)], limits: &Limits) -> Vec<Kind> {
    let engine = bare_engine();
    let Ok(module) = wasmtime::Module::new(engine, bytes) else {
        return vec![Kind::Refused; exports.len()];
    };
    let ticks = limits.deadline.as_millis().max(1) as u64;
    let mut kinds = Vec::new();
    for (name, args) in exports {
        let mut store = Store::new(
            engine,
            BareLimiter {
                max_memory: limits.max_memory,
                max_table_elements: DomainConfig::default().max_table_elements,
                denied: false,
            },
        );
        store.limiter(|l| l);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks);
        let classify = |e: &wasmtime::Error, denied: bool| match e.downcast_ref::<wasmtime::Trap>()
        {
            Some(wasmtime::Trap::Interrupt) => Kind::Timeout,
            Some(wasmtime::Trap::StackOverflow) => Kind::StackOverflow,
            _ if denied => Kind::Oom,
            Some(_) => Kind::Trap,
            None => Kind::Refused,
        };
        let instance = match wasmtime::Instance::new_async(&mut store, &module, &[]).await {
            Ok(i) => i,
            Err(e) => {
                let denied = store.data().denied;
                kinds.push(match classify(&e, denied) {
                    Kind::Oom => Kind::Refused,
                    k => k,
                });
                continue;
            }
        };
        store.set_epoch_deadline(ticks);
        let Some(func) = instance.get_func(&mut store, name) else {
            kinds.push(Kind::Refused);
            continue;
        };
        let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
        kinds.push(
            match func.call_async(&mut store, args, &mut results).await {
                Ok(()) => Kind::Ok,
                Err(e) => classify(&e, store.data().denied),
            },
        );
    }
    kinds
}

/// Compares the two runs; a mismatching module is written to the temporary directory so it
/// can be examined (`wasm-tools print`) without replaying the run.
pub fn compare(warden: &[Kind], bare: &[Kind], seed: u64, bytes: &[u8]) -> Differential {
    let mut d = Differential::default();
    for (i, (w, b)) in warden.iter().zip(bare).enumerate() {
        d.compared += 1;
        if w == b {
            d.agreed += 1;
        } else if *w == Kind::Timeout || *b == Kind::Timeout {
            d.inconclusive += 1;
        } else {
            let path = std::env::temp_dir().join(format!("warden-stress-{seed:x}.wasm"));
            let saved = match std::fs::write(&path, bytes) {
                Ok(()) => format!(", saved as {}", path.display()),
                Err(_) => String::new(),
            };
            d.mismatches.push(format!(
                "generated module (seed {seed:#x}{saved}), export #{i}: warden {w:?}, bare wasmtime {b:?}"
            ));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every memory a generated module declares, as (initial, maximum) in bytes: with
    /// `export_everything` its one memory is exported.
    fn memories(engine: &wasmtime::Engine, bytes: &[u8]) -> Vec<(u64, Option<u64>)> {
        let module = wasmtime::Module::new(engine, bytes).expect("wasm-smith modules are valid");
        let required = module.resources_required();
        let mut out: Vec<_> = module
            .exports()
            .filter_map(|e| e.ty().memory().cloned())
            .map(|m| (m.minimum() << 16, m.maximum().map(|p| p << 16)))
            .collect();
        assert_eq!(
            out.len(),
            required.num_memories as usize,
            "every memory exported"
        );
        out.sort();
        out
    }

    #[test]
    fn generated_modules_declare_no_memory_past_the_generated_limit() {
        let engine = wasmtime::Engine::default();
        let (mut with_memory, mut past_old_bound) = (0, 0);
        for seed in 0..150u64 {
            let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for (initial, maximum) in memories(&engine, &module(seed, MAX_MEMORY).unwrap()) {
                with_memory += 1;
                assert!(
                    initial <= MAX_MEMORY,
                    "seed {seed:#x}: initial {initial} bytes"
                );
                assert!(
                    maximum.is_none_or(|m| m <= MAX_MEMORY),
                    "seed {seed:#x}: maximum {maximum:?} bytes"
                );
            }
            // The same seed under the old 4 MiB bound: the check above is not vacuous.
            past_old_bound += memories(&engine, &module(seed, 4 << 20).unwrap())
                .iter()
                .filter(|(initial, _)| *initial > MAX_MEMORY)
                .count();
        }
        assert!(with_memory > 20, "only {with_memory} modules had a memory");
        assert!(
            past_old_bound > 0,
            "no seed declared more than the bound under 4 MiB"
        );
    }
}
