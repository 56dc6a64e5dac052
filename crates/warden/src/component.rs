//! Component guests (`wasmtime::component`): what a domain needs to hold a component instead
//! of a core module — its exports resolved by name, typed arguments checked against them, and
//! the store's preview2 WASI context.
//!
//! A component domain has the same lifecycle as a core one (DESIGN §2): instantiation and
//! every call run through the domain's worker and `drive`, so deadlines, aborts (at epoch
//! checks, and by dropping the call future while the guest is parked in a WASI host call),
//! unload, the memory limiter and budget, events and the policy apply unchanged.
//!
//! # Export names
//!
//! A component's function exports are named as the component model nests them: a function at
//! the top level (`greet`), or a function in an exported instance (`wasi:cli/run@0.2.0` →
//! `run`). A name given to [`Domain::invoke_component`](crate::Domain::invoke_component) or
//! [`Module::component_func`](crate::Module::component_func) matches, in this order:
//!
//! 1. the full path, its parts joined by `#` or by `/`: `wasi:cli/run@0.2.0#run`,
//!    `my:pkg/api/get`; the same with the versions left out (`wasi:cli/run#run`);
//! 2. else the function's own name alone (`run`), as `wasmtime run --invoke` resolves it,
//!    when exactly one function has it (several: an error that lists them).
//!
//! # The finalizer
//!
//! A component's finalizer is a function without parameters or results exported either as
//! `on-unload` in the interface `warden:host/finalizer@0.1.0` (what the SDK's `world guest`
//! exports) or at the top level as [`FINALIZER`] (`warden-on-unload`, the kebab-case WIT
//! requires). A component exporting both has the interface's run, and only that one. It runs
//! when and as a core module's `warden_on_unload` does. A function of another type under
//! either name is no finalizer (it is never called at unload).
//!
//! # Where the guarantees end (for components, today)
//!
//! - **A trap ends the instance.** The component model forbids entering an instance again
//!   after it trapped (wasmtime: "cannot enter component instance"). Every interrupted call
//!   — trap, stack overflow, out of memory, deadline, abort — and a `wasi:cli/exit` therefore
//!   ends a component domain: after the call's outcome and its escalation, the domain is
//!   unloaded politely (its finalizer is skipped, since it cannot run), and later calls fail
//!   `domain_unloaded`. A core module's domain stays loaded after a trap.
//! - **Warden's imports are `warden:host@0.1.0`** (`sdk/wit/warden-host.wit`, host side in
//!   `host/component.rs`, the same implementation as the core `"warden"` imports). The
//!   embedder's own interfaces are typed from its WIT by `bindgen!` and registered with
//!   [`HostFunctions::component`](crate::HostFunctions::component) (see `host/typed.rs` for
//!   what that covers). A component imports WASI preview2 (`wasi:*@0.2`, with `wasi:http`:
//!   see [`http`](crate::http)), `warden:host` and those only; any other import fails
//!   `create_domain` with [`Error::Instantiate`] naming it. A panic in a host function a
//!   component called is a trap of that call.
//! - **Synchronous exports only.** Component-model async (`async` functions, streams,
//!   futures) is not enabled.

use std::sync::{Arc, OnceLock};
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, Val};

use crate::domain::DomainState;
use crate::error::Error;

/// The component finalizer's top-level export name (a core module's is `warden_on_unload`).
pub const FINALIZER: &str = "warden-on-unload";

/// The interface of the SDK's finalizer (`world guest` in `sdk/wit/warden-host.wit` exports
/// it), any version; its function is [`FINALIZER_FUNC`].
pub const FINALIZER_INTERFACE: &str = "warden:host/finalizer";

/// The function of [`FINALIZER_INTERFACE`] that is the finalizer.
pub const FINALIZER_FUNC: &str = "on-unload";

/// A component's function export, found by name.
#[derive(Clone, Debug)]
pub struct ComponentExport {
    /// Its full path, parts joined by `#` (`wasi:cli/run@0.2.0#run`), or its own name at the
    /// top level.
    pub name: String,
    /// Its type: parameter names and types, result types.
    pub func: ComponentFunc,
}

impl ComponentExport {
    /// The parameter types, in order.
    pub fn params(&self) -> Vec<Type> {
        self.func.params().map(|(_, ty)| ty).collect()
    }

    /// Its parameters as WIT writes them: `a: s32, b: list<string>`.
    pub fn describe_params(&self) -> String {
        self.func
            .params()
            .map(|(n, t)| format!("{n}: {}", type_name(&t)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How many values it returns (0 or 1).
    pub fn results(&self) -> usize {
        self.func.results().len()
    }
}

/// One function export of a component: its path, index and type.
struct Export {
    path: Vec<String>,
    index: ComponentExportIndex,
    func: ComponentFunc,
}

/// A compiled component and what Warden looked up in it once, at load. Cheap to clone.
#[derive(Clone)]
pub(crate) struct CompiledComponent {
    pub(crate) component: Component,
    /// Its function exports, nested ones included (bounded by the component's own size).
    exports: Arc<[Export]>,
    /// The finalizer export, if it has one of the right type.
    pub(crate) finalizer: Option<ComponentExportIndex>,
    /// The component linked against the runtime's linker, once (see `RuntimeInner`).
    pub(crate) pre: Arc<OnceLock<wasmtime::component::InstancePre<DomainState>>>,
    /// The `wasi:http/incoming-handler` bindings, looked up at its first HTTP call.
    pub(crate) http: Arc<OnceLock<Result<wasmtime_wasi_http::p2::bindings::ProxyIndices, String>>>,
    /// It imports a `wasi:` interface: only then does a domain build it a WASI context (as a
    /// core module gets one only if it imports `wasi_snapshot_preview1`).
    pub(crate) imports_wasi: bool,
}

impl CompiledComponent {
    pub(crate) fn new(engine: &wasmtime::Engine, component: Component) -> Self {
        let mut exports = Vec::new();
        collect(
            engine,
            &component,
            ComponentItem::Component(component.component_type()),
            Vec::new(),
            &mut exports,
        );
        let nullary = |e: &&Export| e.func.params().len() == 0 && e.func.results().len() == 0;
        // The SDK's `world guest` form first, then the top-level one.
        let finalizer = exports
            .iter()
            .filter(nullary)
            .find(|e| {
                e.path.len() == 2
                    && strip_version(&e.path[0]) == FINALIZER_INTERFACE
                    && e.path[1] == FINALIZER_FUNC
            })
            .or_else(|| {
                exports
                    .iter()
                    .filter(nullary)
                    .find(|e| e.path.len() == 1 && e.path[0] == FINALIZER)
            })
            .map(|e| e.index);
        let imports_wasi = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name.starts_with("wasi:"));
        CompiledComponent {
            component,
            exports: exports.into(),
            finalizer,
            pre: Arc::new(OnceLock::new()),
            http: Arc::new(OnceLock::new()),
            imports_wasi,
        }
    }

    /// The function export `name` names (see the [module docs](self)).
    pub(crate) fn resolve(
        &self,
        name: &str,
    ) -> Result<(ComponentExport, ComponentExportIndex), Error> {
        let found = |e: &Export| {
            (
                ComponentExport {
                    name: e.path.join("#"),
                    func: e.func.clone(),
                },
                e.index,
            )
        };
        if let Some(e) = self.exports.iter().find(|e| full_match(&e.path, name)) {
            return Ok(found(e));
        }
        let by_own_name: Vec<&Export> = self
            .exports
            .iter()
            .filter(|e| e.path.last().is_some_and(|n| n == name))
            .collect();
        match by_own_name.as_slice() {
            [one] => Ok(found(one)),
            [] => Err(Error::NoSuchExport(name.to_string())),
            many => Err(Error::AmbiguousExport {
                name: name.to_string(),
                candidates: many
                    .iter()
                    .map(|e| format!("`{}`", e.path.join("#")))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// Walks the exports of a component type, recording every function with its path and index.
fn collect(
    engine: &wasmtime::Engine,
    component: &Component,
    item: ComponentItem,
    path: Vec<String>,
    out: &mut Vec<Export>,
) {
    let nested: Vec<(String, ComponentItem)> = match item {
        ComponentItem::ComponentFunc(func) => {
            let mut index = None;
            for name in &path {
                index = component.get_export_index(index.as_ref(), name.as_str());
                if index.is_none() {
                    return;
                }
            }
            if let Some(index) = index {
                out.push(Export { path, index, func });
            }
            return;
        }
        ComponentItem::Component(c) => c
            .exports(engine)
            .map(|(n, i)| (n.to_string(), i.ty))
            .collect(),
        ComponentItem::ComponentInstance(c) => c
            .exports(engine)
            .map(|(n, i)| (n.to_string(), i.ty))
            .collect(),
        _ => return,
    };
    for (name, item) in nested {
        let mut path = path.clone();
        path.push(name);
        collect(engine, component, item, path, out);
    }
}

/// Whether `name` spells `path` in full: joined by `#` or `/`, with or without versions.
fn full_match(path: &[String], name: &str) -> bool {
    let unversioned: Vec<&str> = path.iter().map(|p| strip_version(p)).collect();
    let versioned: Vec<&str> = path.iter().map(String::as_str).collect();
    [versioned, unversioned]
        .iter()
        .any(|parts| parts.join("#") == name || parts.join("/") == name)
}

/// `wasi:cli/run@0.2.0` → `wasi:cli/run`.
fn strip_version(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// Checks that `args` fit `export`'s parameters, naming the first mismatch.
pub(crate) fn check_args(
    export: &ComponentExport,
    params: &[Type],
    args: &[Val],
) -> Result<(), Error> {
    // Checked without allocating: this runs on every call. The names are for the error only.
    let bad = |detail: String| Error::BadArguments {
        name: export.name.clone(),
        expected: export.describe_params(),
        given: detail,
    };
    if params.len() != args.len() {
        return Err(bad(format!("{} values", args.len())));
    }
    if let Some(i) = params.iter().zip(args).position(|(ty, arg)| !fits(ty, arg)) {
        let name = export.func.params().nth(i).map(|(n, _)| n.to_string());
        let name = name.unwrap_or_default();
        return Err(bad(format!("a {} for `{name}`", val_kind(&args[i]))));
    }
    Ok(())
}

/// Whether `val` is a value of type `ty` (resources, futures and streams are checked by
/// wasmtime itself, against the store they belong to).
pub(crate) fn fits(ty: &Type, val: &Val) -> bool {
    match (ty, val) {
        (Type::Bool, Val::Bool(_))
        | (Type::S8, Val::S8(_))
        | (Type::U8, Val::U8(_))
        | (Type::S16, Val::S16(_))
        | (Type::U16, Val::U16(_))
        | (Type::S32, Val::S32(_))
        | (Type::U32, Val::U32(_))
        | (Type::S64, Val::S64(_))
        | (Type::U64, Val::U64(_))
        | (Type::Float32, Val::Float32(_))
        | (Type::Float64, Val::Float64(_))
        | (Type::Char, Val::Char(_))
        | (Type::String, Val::String(_)) => true,
        (Type::List(l), Val::List(items)) => {
            let t = l.ty();
            items.iter().all(|v| fits(&t, v))
        }
        (Type::FixedLengthList(l), Val::FixedLengthList(items)) => {
            let t = l.ty();
            items.len() == l.len() as usize && items.iter().all(|v| fits(&t, v))
        }
        (Type::Map(m), Val::Map(pairs)) => {
            let (k, v) = (m.key(), m.value());
            pairs.iter().all(|(a, b)| fits(&k, a) && fits(&v, b))
        }
        (Type::Record(r), Val::Record(fields)) => {
            r.fields().len() == fields.len()
                && r.fields()
                    .zip(fields)
                    .all(|(f, (name, v))| f.name == name && fits(&f.ty, v))
        }
        (Type::Tuple(t), Val::Tuple(items)) => {
            t.types().len() == items.len() && t.types().zip(items).all(|(t, v)| fits(&t, v))
        }
        (Type::Variant(t), Val::Variant(case, payload)) => t.cases().any(|c| {
            c.name == case
                && match (&c.ty, payload) {
                    (None, None) => true,
                    (Some(t), Some(v)) => fits(t, v),
                    _ => false,
                }
        }),
        (Type::Enum(t), Val::Enum(case)) => t.names().any(|n| n == case),
        (Type::Option(t), Val::Option(v)) => v.as_deref().is_none_or(|v| fits(&t.ty(), v)),
        (Type::Result(t), Val::Result(r)) => {
            let (side, v) = match r {
                Ok(v) => (t.ok(), v),
                Err(v) => (t.err(), v),
            };
            match (side, v.as_deref()) {
                (None, None) => true,
                (Some(t), Some(v)) => fits(&t, v),
                _ => false,
            }
        }
        (Type::Flags(t), Val::Flags(names)) => names.iter().all(|n| t.names().any(|f| f == n)),
        (Type::Own(_) | Type::Borrow(_), Val::Resource(_))
        | (Type::Future(_), Val::Future(_))
        | (Type::Stream(_), Val::Stream(_))
        | (Type::ErrorContext, Val::ErrorContext(_)) => true,
        _ => false,
    }
}

/// A type as WIT spells it, for error messages.
fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", type_name(&l.ty())),
        Type::FixedLengthList(l) => format!("list<{}, {}>", type_name(&l.ty()), l.len()),
        Type::Map(m) => format!("map<{}, {}>", type_name(&m.key()), type_name(&m.value())),
        Type::Record(r) => format!(
            "record {{ {} }}",
            r.fields()
                .map(|f| format!("{}: {}", f.name, type_name(&f.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Tuple(t) => format!(
            "tuple<{}>",
            t.types()
                .map(|t| type_name(&t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Variant(_) => "variant".into(),
        Type::Enum(_) => "enum".into(),
        Type::Option(t) => format!("option<{}>", type_name(&t.ty())),
        Type::Result(t) => {
            let side = |t: Option<Type>| t.map_or("_".to_string(), |t| type_name(&t));
            format!("result<{}, {}>", side(t.ok()), side(t.err()))
        }
        Type::Flags(_) => "flags".into(),
        Type::Own(_) => "own".into(),
        Type::Borrow(_) => "borrow".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// What kind of value `val` is, for error messages.
fn val_kind(val: &Val) -> &'static str {
    match val {
        Val::Bool(_) => "bool",
        Val::S8(_) => "s8",
        Val::U8(_) => "u8",
        Val::S16(_) => "s16",
        Val::U16(_) => "u16",
        Val::S32(_) => "s32",
        Val::U32(_) => "u32",
        Val::S64(_) => "s64",
        Val::U64(_) => "u64",
        Val::Float32(_) => "f32",
        Val::Float64(_) => "f64",
        Val::Char(_) => "char",
        Val::String(_) => "string",
        Val::List(_) | Val::FixedLengthList(_) => "list",
        Val::Map(_) => "map",
        Val::Record(_) => "record",
        Val::Tuple(_) => "tuple",
        Val::Variant(..) => "variant",
        Val::Enum(_) => "enum",
        Val::Option(_) => "option",
        Val::Result(_) => "result",
        Val::Flags(_) => "flags",
        Val::Resource(_) => "resource",
        Val::Future(_) => "future",
        Val::Stream(_) => "stream",
        Val::ErrorContext(_) => "error-context",
    }
}

/// A component domain's preview2 WASI state: the context and the resource table it keeps
/// streams, files and pollables in. Dropped with the store.
pub(crate) struct WasiP2 {
    /// `None` for a component that imports no `wasi:` interface (building one seeds a CSPRNG
    /// and allocates: a seventh of a fresh component domain's instructions).
    pub(crate) ctx: Option<wasmtime_wasi::WasiCtx>,
    pub(crate) table: wasmtime::component::ResourceTable,
    /// `wasi:http`'s context and outbound policy (its resources are in `table`).
    pub(crate) http: crate::http::HttpState,
}

impl wasmtime_wasi::WasiView for DomainState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let p2 = self
            .wasi_p2
            .as_mut()
            .expect("the component linker is only used with component stores, which have one");
        wasmtime_wasi::WasiCtxView {
            // Only a component that imports WASI can reach WASI's host functions, and it has
            // its context; were that ever not so, an empty context grants nothing.
            ctx: p2
                .ctx
                .get_or_insert_with(|| wasmtime_wasi::WasiCtxBuilder::new().build()),
            table: &mut p2.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{full_match, strip_version};

    #[test]
    fn full_paths_match_with_or_without_versions() {
        let path = vec!["wasi:cli/run@0.2.0".to_string(), "run".to_string()];
        assert!(full_match(&path, "wasi:cli/run@0.2.0#run"));
        assert!(full_match(&path, "wasi:cli/run@0.2.0/run"));
        assert!(full_match(&path, "wasi:cli/run#run"));
        assert!(full_match(&path, "wasi:cli/run/run"));
        assert!(!full_match(&path, "run"));
        assert!(!full_match(&path, "wasi:cli/exit#run"));
        assert_eq!(strip_version("greet"), "greet");
    }
}
