//! Export signatures: what a call needs of an export's type, looked up once per module and
//! export, and the check of a call's arguments against it.
//!
//! Asking wasmtime for a function's type roots it in the engine's type registry, which costs
//! more than the rest of a warm call's bookkeeping, and building a signature allocates. So a
//! module's signatures are kept by the module ([`Signatures`], shared by every clone of the
//! [`Module`](crate::Module) and every domain of it), and a fresh domain finds its export's
//! signature already built. Only exports that exist are kept, so the cache is bounded by the
//! module's exports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::engine::Code;
use crate::error::Error;
use crate::worker::Args;

/// One export's signature.
pub(crate) struct Signature {
    /// The export's name (a component's: its full path), shared by every call of it.
    pub(crate) name: Arc<str>,
    /// Dense per module (the order its exports were first called in, by any domain): the
    /// index of the export's function handle in each worker's cache.
    pub(crate) slot: usize,
    pub(crate) results: usize,
    pub(crate) kind: SigKind,
}

/// A core export's parameters, or a component export's type and index.
pub(crate) enum SigKind {
    Core {
        params: Vec<wasmtime::ValType>,
        /// When the signature has a typed call (see `typed_call`).
        shape: Option<crate::typed_call::Shape>,
    },
    Component {
        export: crate::component::ComponentExport,
        /// The export's parameter types, looked up once (each lookup builds them anew).
        params: Vec<wasmtime::component::types::Type>,
        index: wasmtime::component::ComponentExportIndex,
    },
}

/// A module's export signatures, by the name they were called by.
#[derive(Default)]
pub(crate) struct Signatures {
    /// The first export called: a module mostly serves one, read without a lock.
    first: OnceLock<(Arc<str>, Arc<Signature>)>,
    by_name: RwLock<HashMap<Arc<str>, Arc<Signature>>>,
}

/// A domain's last signature looked up, other than its module's first: one string compare
/// and an uncontended lock instead of the module's shared map.
#[derive(Default)]
pub(crate) struct LastSignature(Mutex<Option<(Arc<str>, Arc<Signature>)>>);

impl Signatures {
    /// The signature of the function export `export` of `code` (the module these are of).
    #[inline]
    pub(crate) fn get(
        &self,
        code: &Code,
        export: &str,
        last: &LastSignature,
    ) -> Result<Arc<Signature>, Error> {
        if let Some((name, sig)) = self.first.get()
            && **name == *export
        {
            return Ok(sig.clone());
        }
        self.get_other(code, export, last)
    }

    /// [`get`](Self::get) of an export other than the module's first.
    #[inline(never)]
    fn get_other(
        &self,
        code: &Code,
        export: &str,
        last: &LastSignature,
    ) -> Result<Arc<Signature>, Error> {
        let mut last = last.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((name, sig)) = &*last
            && **name == *export
        {
            return Ok(sig.clone());
        }
        let found = self
            .by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get_key_value(export)
            .map(|(name, sig)| (name.clone(), sig.clone()));
        let (name, sig) = match found {
            Some(found) => found,
            None => self.build(code, export)?,
        };
        *last = Some((name, sig.clone()));
        Ok(sig)
    }

    /// Looks `export` up in `code` and keeps it (or what another domain kept meanwhile).
    fn build(&self, code: &Code, export: &str) -> Result<(Arc<str>, Arc<Signature>), Error> {
        // Looked up outside the write lock: other exports' calls go on meanwhile.
        let (name, results, kind): (Arc<str>, usize, SigKind) = match code {
            Code::Core(m) => {
                let Some(wasmtime::ExternType::Func(ty)) = m.get_export(export) else {
                    return Err(Error::NoSuchExport(export.to_string()));
                };
                let params: Vec<wasmtime::ValType> = ty.params().collect();
                let results: Vec<wasmtime::ValType> = ty.results().collect();
                let kind = SigKind::Core {
                    shape: crate::typed_call::Shape::of(&params, &results),
                    params,
                };
                (export.into(), results.len(), kind)
            }
            Code::Component(c) => {
                let (found, index) = c.resolve(export)?;
                let (name, results) = (found.name.as_str().into(), found.results());
                let kind = SigKind::Component {
                    params: found.params(),
                    index,
                    export: found,
                };
                (name, results, kind)
            }
        };
        let mut by_name = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        if let Some((key, sig)) = by_name.get_key_value(export) {
            return Ok((key.clone(), sig.clone()));
        }
        let slot = by_name.len();
        let sig = Arc::new(Signature {
            name,
            slot,
            results,
            kind,
        });
        let key: Arc<str> = export.into();
        by_name.insert(key.clone(), sig.clone());
        if slot == 0 {
            // Set once, under the write lock, by the module's first export's first call.
            let _ = self.first.set((key.clone(), sig.clone()));
        }
        Ok((key, sig))
    }
}

impl Signature {
    /// Checks that `args` fit this signature of `export` (the request's own errors).
    pub(crate) fn check(&self, export: &str, args: &Args) -> Result<(), Error> {
        match (&self.kind, args) {
            (SigKind::Core { params, .. }, Args::Core(args)) => check_core(params, export, args)?,
            (SigKind::Core { params, .. }, Args::Bytes(_)) => {
                use wasmtime::ValType;
                let fits = matches!(params[..], [ValType::I32, ValType::I32]) && self.results == 1;
                if !fits {
                    return Err(Error::BadArguments {
                        name: export.to_string(),
                        expected: "a byte call's (i32, i32) -> i64".into(),
                        given: format!(
                            "({}) with {} results",
                            params
                                .iter()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                            self.results
                        ),
                    });
                }
            }
            (SigKind::Component { .. }, Args::Bytes(_)) => {
                return Err(Error::NoSuchExport(format!(
                    "{export}` in a core module for a byte call; the domain holds a component"
                )));
            }
            (SigKind::Component { export, params, .. }, Args::Component(args)) => {
                crate::component::check_args(export, params, args)?
            }
            // `Domain::call_http` checked that this is the handler of a wasi:http/proxy.
            (SigKind::Component { .. }, Args::Http { .. }) => {}
            (SigKind::Core { .. }, Args::Http { .. }) => {
                return Err(Error::NoSuchExport(format!(
                    "{export}`: the domain holds a core module, not a wasi:http/proxy component"
                )));
            }
            (SigKind::Core { .. }, Args::Component(_)) => {
                return Err(Error::NoSuchExport(format!(
                    "{export}` in a component; the domain holds a core module: call it with \
                     `invoke` or `call"
                )));
            }
            (SigKind::Component { .. }, Args::Core(_)) => {
                return Err(Error::NoSuchExport(format!(
                    "{export}` in a core module; the domain holds a component: call it with \
                     `invoke_component` or `call_component"
                )));
            }
        }
        Ok(())
    }
}

/// Checks that `args` fit a core export's parameters.
fn check_core(
    params: &[wasmtime::ValType],
    export: &str,
    args: &[wasmtime::Val],
) -> Result<(), Error> {
    // Compared without allocating: this runs on every call.
    let fits = params.len() == args.len() && params.iter().zip(args).all(|(p, a)| fits_param(p, a));
    if !fits {
        let expected: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        let given: Vec<String> = args.iter().map(val_type_name).collect();
        return Err(Error::BadArguments {
            name: export.to_string(),
            expected: expected.join(", "),
            given: given.join(", "),
        });
    }
    Ok(())
}

/// Whether `arg` can be passed for a parameter of type `param` (references are checked by
/// wasmtime itself, against the store they belong to).
fn fits_param(param: &wasmtime::ValType, arg: &wasmtime::Val) -> bool {
    use wasmtime::{Val, ValType};
    match param {
        ValType::I32 => matches!(arg, Val::I32(_)),
        ValType::I64 => matches!(arg, Val::I64(_)),
        ValType::F32 => matches!(arg, Val::F32(_)),
        ValType::F64 => matches!(arg, Val::F64(_)),
        ValType::V128 => matches!(arg, Val::V128(_)),
        ValType::Ref(_) => !matches!(
            arg,
            Val::I32(_) | Val::I64(_) | Val::F32(_) | Val::F64(_) | Val::V128(_)
        ),
    }
}

fn val_type_name(v: &wasmtime::Val) -> String {
    match v {
        wasmtime::Val::I32(_) => "i32".into(),
        wasmtime::Val::I64(_) => "i64".into(),
        wasmtime::Val::F32(_) => "f32".into(),
        wasmtime::Val::F64(_) => "f64".into(),
        wasmtime::Val::V128(_) => "v128".into(),
        _ => "ref".into(),
    }
}
