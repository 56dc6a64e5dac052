//! Capabilities: which imports a domain's guest may have (DESIGN §1, §4; the CLR's Host
//! Protection categories and SQL Server's SAFE / EXTERNAL_ACCESS / UNSAFE buckets).
//!
//! Every import Warden provides belongs to one [`Capability`]; a domain is created with a
//! [`Grant`], a set of them ([`DomainConfig::grant`](crate::DomainConfig::grant)). Creating a
//! domain whose module imports anything its grant forbids fails **before any guest code runs**
//! (no start function, no `domain_loaded`, no call) with [`Error::NotPermitted`], which lists
//! every forbidden import with its category. [`Runtime::required_capabilities`](crate::Runtime::required_capabilities) and
//! [`Runtime::check_grant`](crate::Runtime::check_grant) make the same check without creating anything.
//!
//! | category | what it covers |
//! |---|---|
//! | `compute`, `regions`, `log`, `gate` | always granted: plumbing with no effect outside the domain (`proc_exit`, `sched_yield`, `wasi:io/*`, `wasi:http/types`, `wasi:cli/exit`), critical and constrained regions and `abort_requested`, `log`, the memory gate |
//! | `clock` | `clock_*`, `wasi:clocks/*` (a monotonic-clock pollable is also how a component sleeps) |
//! | `random` | `random_get`, `wasi:random/*` |
//! | `stdio` | `fd_read`, `fd_write`, `fd_seek`, `fd_close`, `fd_fdstat_*`, … (the descriptor calls stdio needs), `wasi:cli/std{in,out,err}`, `wasi:cli/terminal-*` |
//! | `filesystem` | `path_*`, the preopens (`fd_prestat_*`), `fd_readdir`, `fd_filestat_*`, `fd_pread`/`fd_pwrite`, …, `wasi:filesystem/*` |
//! | `network` | `sock_*`, `wasi:sockets/*`, `wasi:http/outgoing-handler` |
//! | `environment` | `args_*`, `environ_*`, `wasi:cli/environment` |
//! | `synchronization` | host locks: `lock_acquire`, `lock_release`, `warden:host/locks` |
//! | `blocking` | host waits: `sleep_ms`, `poll_oneoff`, `warden:host/host#sleep` |
//! | `host-state` | host handles: `handle_close`, `warden:host/handles`; the default of an embedder's function |
//! | `domains` | calls into the domains the host linked to this one: `domain_call`, `warden:host/domains` (which domains is the links, [`Domain::link`](crate::Domain::link)) |
//! | `may-leak-on-abort` | embedder functions that declare it ([`HostFunctions::requires`](crate::HostFunctions::requires)) |
//!
//! Presets nest: `safe` (the always-granted four, `clock`, `random`) < `external` (plus
//! `filesystem`, `network`, `environment`, `stdio`) < `unsafe` (everything). A grant is
//! written as a preset or a comma list of presets and categories (`safe,stdio,synchronization`);
//! a list is exactly what it names plus the always-granted plumbing, so `compute` alone gives
//! a guest nothing but its own code (no clock, no randomness: a deterministic guest).
//!
//! Where the guarantee ends:
//! - It is about **imports**: a grant decides which host functions a guest may link, not what
//!   they reach. A granted `filesystem` is still only the domain's preopens
//!   ([`WasiConfig::preopens`](crate::WasiConfig::preopens)), a granted `network` only what the
//!   domain's configuration allows (outbound HTTP to [`HttpConfig`](crate::HttpConfig)'s hosts;
//!   WASI sockets have no address allow list, so grant `network` only to guests you would let
//!   open sockets), a granted `environment` only the args and variables the host put in
//!   [`WasiConfig`](crate::WasiConfig).
//! - Preview1 numbers descriptors, so `stdio`'s descriptor calls also work on any descriptor
//!   the guest holds. Preopened directories are therefore refused outright in a domain whose
//!   grant lacks `filesystem` ([`Error::Config`] at creation), so such a guest holds none.
//! - The check happens once, at creation; nothing is checked per call, and the `-5` (not
//!   permitted) code of DESIGN §4 is never returned by a linked import, because a forbidden one
//!   is never linked.
//! - An import Warden does not provide is not a capability question: creation fails with the
//!   link error ([`Error::UnknownImport`], or [`Error::Instantiate`] naming it) before the
//!   grant is looked at.

use std::fmt;
use std::str::FromStr;

use crate::engine::{Code, Module};
use crate::error::Error;
use crate::host::HostFunctions;

/// One category of imports (see the [module docs](self) for which imports each covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Capability {
    /// Plumbing with no effect outside the domain: `proc_exit`, `sched_yield`, `wasi:io/*`,
    /// `wasi:http/types`, `wasi:cli/exit`. Always granted.
    Compute,
    /// Critical and constrained regions and `abort_requested`. Always granted.
    Regions,
    /// The guest's log lines (`guest_log` events). Always granted.
    Log,
    /// The memory gate (`gate_reserve`, `gate_release`). Always granted.
    Gate,
    /// Wall and monotonic clocks.
    Clock,
    /// Random numbers.
    Random,
    /// Standard input, output and error (and preview1's descriptor calls on them).
    Stdio,
    /// The file system under the domain's preopens.
    Filesystem,
    /// Sockets and outbound HTTP.
    Network,
    /// Command-line arguments and environment variables.
    Environment,
    /// Host locks.
    Synchronization,
    /// Host waits: sleeps and `poll_oneoff`.
    Blocking,
    /// Host handles, and embedder functions that declare no category of their own.
    HostState,
    /// Calls into linked domains (`domain_call`); which domains is the host's links.
    Domains,
    /// Embedder functions that declare they may leak host state when a call is aborted in
    /// them.
    MayLeakOnAbort,
}

impl Capability {
    /// Every category, in the order of the [module docs](self)' table.
    pub const ALL: [Capability; 15] = [
        Capability::Compute,
        Capability::Regions,
        Capability::Log,
        Capability::Gate,
        Capability::Clock,
        Capability::Random,
        Capability::Stdio,
        Capability::Filesystem,
        Capability::Network,
        Capability::Environment,
        Capability::Synchronization,
        Capability::Blocking,
        Capability::HostState,
        Capability::Domains,
        Capability::MayLeakOnAbort,
    ];

    /// Its name in a grant (`host-state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Compute => "compute",
            Capability::Regions => "regions",
            Capability::Log => "log",
            Capability::Gate => "gate",
            Capability::Clock => "clock",
            Capability::Random => "random",
            Capability::Stdio => "stdio",
            Capability::Filesystem => "filesystem",
            Capability::Network => "network",
            Capability::Environment => "environment",
            Capability::Synchronization => "synchronization",
            Capability::Blocking => "blocking",
            Capability::HostState => "host-state",
            Capability::Domains => "domains",
            Capability::MayLeakOnAbort => "may-leak-on-abort",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = ParseGrantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseGrantError::Unknown(s.to_string()))
    }
}

/// A set of [`Capability`]s: what a domain's guest may import. Always holds the plumbing
/// (`compute`, `regions`, `log`, `gate`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grant(u16);

const fn bits(caps: &[Capability]) -> u16 {
    let mut b = 0;
    let mut i = 0;
    while i < caps.len() {
        b |= 1 << (caps[i] as u16);
        i += 1;
    }
    b
}

const ALWAYS: u16 = bits(&[
    Capability::Compute,
    Capability::Regions,
    Capability::Log,
    Capability::Gate,
]);

impl Grant {
    /// Only the plumbing every guest has: its own code, regions, log, the memory gate.
    pub const COMPUTE: Grant = Grant(ALWAYS);
    /// `safe`: the plumbing, clocks and randomness (SQL Server's SAFE).
    pub const SAFE: Grant = Grant(ALWAYS | bits(&[Capability::Clock, Capability::Random]));
    /// `external`: `safe` plus the file system (preopens), network, environment and stdio
    /// (EXTERNAL_ACCESS).
    pub const EXTERNAL: Grant = Grant(
        Grant::SAFE.0
            | bits(&[
                Capability::Filesystem,
                Capability::Network,
                Capability::Environment,
                Capability::Stdio,
            ]),
    );
    /// `unsafe`: everything, locks, waits, handles and leaky embedder functions included
    /// (UNSAFE). The library's default, so embedders keep what they had before grants.
    pub const UNSAFE: Grant = Grant(bits(&Capability::ALL));

    /// The presets by name, smallest first.
    pub const PRESETS: [(&'static str, Grant); 3] = [
        ("safe", Grant::SAFE),
        ("external", Grant::EXTERNAL),
        ("unsafe", Grant::UNSAFE),
    ];

    /// Whether the grant includes `cap`.
    pub fn allows(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// This grant plus `cap`.
    pub fn with(self, cap: Capability) -> Grant {
        Grant(self.0 | cap.bit())
    }

    /// Both grants together.
    pub fn union(self, other: Grant) -> Grant {
        Grant(self.0 | other.0)
    }

    /// Whether every category of `other` is in this grant.
    pub fn contains(self, other: Grant) -> bool {
        self.0 & other.0 == other.0
    }

    /// Its categories, in [`Capability::ALL`]'s order.
    pub fn capabilities(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.allows(*c))
    }

    /// Checks imports (from [`Runtime::required_capabilities`](crate::Runtime::required_capabilities)) against the grant: every one it
    /// forbids, in one [`Error::NotPermitted`].
    pub fn check(self, imports: &[ImportCapability]) -> Result<(), Error> {
        let forbidden: Vec<ImportCapability> = imports
            .iter()
            .filter(|i| !self.allows(i.capability))
            .cloned()
            .collect();
        if forbidden.is_empty() {
            return Ok(());
        }
        Err(Error::NotPermitted {
            grant: self,
            imports: forbidden,
        })
    }
}

impl Default for Grant {
    /// [`Grant::UNSAFE`]: a library default that keeps every embedder's guests working as
    /// before grants existed. Restrict it per domain.
    fn default() -> Self {
        Grant::UNSAFE
    }
}

impl fmt::Display for Grant {
    /// A preset's name when it is one, else the largest preset it holds and the categories
    /// beyond it (`safe,stdio,synchronization`); only the plumbing is `compute`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = Grant::PRESETS
            .iter()
            .rev()
            .find(|(_, p)| self.contains(*p))
            .copied();
        let (mut parts, rest) = match base {
            Some((name, p)) => (vec![name], Grant(self.0 & !p.0)),
            None => (Vec::new(), Grant(self.0 & !ALWAYS)),
        };
        parts.extend(rest.capabilities().map(Capability::as_str));
        if parts.is_empty() {
            parts.push(Capability::Compute.as_str());
        }
        f.write_str(&parts.join(","))
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grant({self})")
    }
}

/// Why a grant's text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseGrantError {
    /// Nothing was named.
    #[error(
        "empty grant (expected a preset: safe, external, unsafe, or a comma list of categories)"
    )]
    Empty,
    /// A name that is neither a preset nor a category.
    #[error(
        "unknown capability `{name}` (expected a preset: safe, external, unsafe; or a category: {all})",
        name = .0,
        all = Capability::ALL.map(Capability::as_str).join(", ")
    )]
    Unknown(String),
}

impl FromStr for Grant {
    type Err = ParseGrantError;

    /// `safe`, `external`, `unsafe`, or a comma list of presets and categories
    /// (`safe,stdio,synchronization`); spaces around the names are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut grant = Grant::COMPUTE;
        let mut named = false;
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                // A trailing comma is harmless; a lone one names nothing.
                continue;
            }
            named = true;
            grant = match Grant::PRESETS.iter().find(|(n, _)| *n == item) {
                Some((_, p)) => grant.union(*p),
                None => grant.with(item.parse()?),
            };
        }
        if !named {
            return Err(ParseGrantError::Empty);
        }
        Ok(grant)
    }
}

/// One import of a module and the category it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportCapability {
    /// The import's module (`wasi_snapshot_preview1`, `warden`, an embedder's) or, for a
    /// component, its interface (`wasi:filesystem/types@0.2.6`).
    pub module: String,
    /// The function's name; empty for a component interface taken as a whole.
    pub name: String,
    /// Its category.
    pub capability: Capability,
}

impl fmt::Display for ImportCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name.is_empty() {
            true => write!(f, "`{}` ({})", self.module, self.capability),
            false => write!(f, "`{}`.`{}` ({})", self.module, self.name, self.capability),
        }
    }
}

/// The category of a `"warden"` import, from [`IMPORTS`](crate::host::IMPORTS).
pub fn warden_import(name: &str) -> Option<Capability> {
    crate::host::IMPORTS
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.capability)
}

/// The category of a WASI preview1 (`wasi_snapshot_preview1`) function; `None` for a name
/// preview1 does not have.
pub fn preview1_import(name: &str) -> Option<Capability> {
    use Capability::*;
    Some(match name {
        "args_get" | "args_sizes_get" | "environ_get" | "environ_sizes_get" => Environment,
        "clock_res_get" | "clock_time_get" => Clock,
        "random_get" => Random,
        // What stdio needs (wasi-libc's stdio uses all of these on fds 0-2).
        "fd_read"
        | "fd_write"
        | "fd_close"
        | "fd_seek"
        | "fd_tell"
        | "fd_fdstat_get"
        | "fd_fdstat_set_flags"
        | "fd_renumber" => Stdio,
        // Preopens and what only makes sense on files and directories.
        "fd_prestat_get"
        | "fd_prestat_dir_name"
        | "fd_readdir"
        | "fd_filestat_get"
        | "fd_filestat_set_size"
        | "fd_filestat_set_times"
        | "fd_pread"
        | "fd_pwrite"
        | "fd_advise"
        | "fd_allocate"
        | "fd_datasync"
        | "fd_sync"
        | "fd_fdstat_set_rights"
        | "path_create_directory"
        | "path_filestat_get"
        | "path_filestat_set_times"
        | "path_link"
        | "path_open"
        | "path_readlink"
        | "path_remove_directory"
        | "path_rename"
        | "path_symlink"
        | "path_unlink_file" => Filesystem,
        "sock_accept" | "sock_recv" | "sock_send" | "sock_shutdown" => Network,
        "poll_oneoff" => Blocking,
        "proc_exit" | "proc_raise" | "sched_yield" => Compute,
        _ => return None,
    })
}

/// The category of a component import Warden provides: a WASI preview2 or `wasi:http`
/// interface (`wasi:clocks/wall-clock@0.2.6`; the version is ignored), or a function of
/// `warden:host` (which `func` decides, since `warden:host/host` holds both `sleep` and
/// `log`). `None` for an interface that is not Warden's.
pub fn component_import(interface: &str, func: &str) -> Option<Capability> {
    use Capability::*;
    let bare = interface.split('@').next().unwrap_or(interface);
    let (package, name) = bare.split_once('/')?;
    Some(match (package, name) {
        ("wasi:io", _) | ("wasi:http", "types") | ("wasi:cli", "exit") => Compute,
        ("wasi:clocks", _) => Clock,
        ("wasi:random", _) => Random,
        ("wasi:cli", "environment") => Environment,
        ("wasi:cli", "stdin" | "stdout" | "stderr") => Stdio,
        ("wasi:cli", n) if n.starts_with("terminal-") => Stdio,
        ("wasi:filesystem", _) => Filesystem,
        ("wasi:sockets", _) | ("wasi:http", _) => Network,
        ("warden:host", "types") => Compute,
        ("warden:host", "regions") => Regions,
        ("warden:host", "memory-gate") => Gate,
        ("warden:host", "locks") => Synchronization,
        ("warden:host", "handles") => HostState,
        ("warden:host", "domains") => Domains,
        ("warden:host", "host") => match func {
            "log" => Log,
            _ => Blocking,
        },
        // `finalizer` is an export; anything else of the package is not Warden's.
        _ => return None,
    })
}

/// Every import of `module` with its category: Warden's own from the tables above, the
/// embedder's from `host` (what each declared, [`HostFunctions::requires`]). Imports nobody
/// provides are left out: they fail to link, which is checked first.
pub(crate) fn required(module: &Module, host: &HostFunctions) -> Vec<ImportCapability> {
    let mut out = Vec::new();
    match &module.code {
        Code::Core(m) => {
            for import in m.imports() {
                let (module, name) = (import.module(), import.name());
                let capability = match module {
                    "wasi_snapshot_preview1" => preview1_import(name),
                    crate::host::MODULE => warden_import(name),
                    _ => host.capability_of(module, name),
                };
                if let Some(capability) = capability {
                    out.push(ImportCapability {
                        module: module.to_string(),
                        name: name.to_string(),
                        capability,
                    });
                }
            }
        }
        Code::Component(c) => {
            use wasmtime::component::types::ComponentItem;
            let engine = c.component.engine();
            for (interface, item) in c.component.component_type().imports(engine) {
                let ComponentItem::ComponentInstance(instance) = item.ty else {
                    // A top-level function is the embedder's (Warden's are all in
                    // interfaces); types and resources carry no capability of their own.
                    if let ComponentItem::ComponentFunc(_) = item.ty {
                        out.push(ImportCapability {
                            module: interface.to_string(),
                            name: String::new(),
                            capability: host.component_capability(interface),
                        });
                    }
                    continue;
                };
                if interface.starts_with("warden:host/host") {
                    // Its functions differ (`sleep` blocks, `log` does not): each is listed.
                    for (func, item) in instance.exports(engine) {
                        if let ComponentItem::ComponentFunc(_) = item.ty
                            && let Some(capability) = component_import(interface, func)
                        {
                            out.push(ImportCapability {
                                module: interface.to_string(),
                                name: func.to_string(),
                                capability,
                            });
                        }
                    }
                    continue;
                }
                out.push(ImportCapability {
                    module: interface.to_string(),
                    name: String::new(),
                    capability: component_import(interface, "")
                        .unwrap_or_else(|| host.component_capability(interface)),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_nest_and_parse() {
        assert!(Grant::EXTERNAL.contains(Grant::SAFE));
        assert!(Grant::UNSAFE.contains(Grant::EXTERNAL));
        assert!(!Grant::SAFE.contains(Grant::EXTERNAL));
        assert!(Grant::SAFE.contains(Grant::COMPUTE));
        for (name, preset) in Grant::PRESETS {
            assert_eq!(name.parse::<Grant>().unwrap(), preset);
            assert_eq!(preset.to_string(), name);
        }
        let g: Grant = "safe, stdio,synchronization".parse().unwrap();
        assert!(g.allows(Capability::Stdio) && g.allows(Capability::Synchronization));
        assert!(!g.allows(Capability::Filesystem));
        assert_eq!(g.to_string(), "safe,stdio,synchronization");
        let c: Grant = "compute".parse().unwrap();
        assert_eq!(c, Grant::COMPUTE);
        assert_eq!(c.to_string(), "compute");
        assert!(!c.allows(Capability::Clock));
        assert_eq!("clock".parse::<Grant>().unwrap().to_string(), "clock");
        for cap in Capability::ALL {
            assert_eq!(cap.as_str().parse::<Capability>().unwrap(), cap);
            assert!(Grant::UNSAFE.allows(cap));
        }
    }

    #[test]
    fn a_bad_grant_names_what_was_wrong() {
        let e = "safe,sockets".parse::<Grant>().unwrap_err();
        assert_eq!(e, ParseGrantError::Unknown("sockets".into()));
        assert!(
            e.to_string().contains("unknown capability `sockets`"),
            "{e}"
        );
        assert!(e.to_string().contains("host-state"), "{e}");
        assert_eq!("".parse::<Grant>().unwrap_err(), ParseGrantError::Empty);
        assert_eq!(" , ".parse::<Grant>().unwrap_err(), ParseGrantError::Empty);
    }

    /// Every function wasmtime-wasi's preview1 linker defines has a category, so none can be
    /// linked past the grant.
    #[test]
    fn every_preview1_function_has_a_category() {
        let engine = wasmtime::Engine::default();
        let mut linker: wasmtime::Linker<wasmtime_wasi::p1::WasiP1Ctx> =
            wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
        let mut store =
            wasmtime::Store::new(&engine, wasmtime_wasi::WasiCtxBuilder::new().build_p1());
        let mut n = 0;
        for (module, name, _) in linker.iter(&mut store) {
            assert_eq!(module, "wasi_snapshot_preview1");
            assert!(preview1_import(name).is_some(), "{name} has no category");
            n += 1;
        }
        assert!(n >= 40, "only {n} preview1 functions seen");
    }

    #[test]
    fn every_warden_import_has_its_category() {
        use Capability::*;
        for i in crate::host::IMPORTS {
            let want = match i.name {
                "lock_acquire" | "lock_release" => Synchronization,
                "sleep_ms" => Blocking,
                "handle_close" => HostState,
                "domain_call" => Domains,
                "log" => Log,
                "gate_reserve" | "gate_release" => Gate,
                _ => Regions,
            };
            assert_eq!(warden_import(i.name), Some(want), "{}", i.name);
        }
        assert_eq!(
            component_import("wasi:filesystem/types@0.2.6", "x"),
            Some(Filesystem)
        );
        assert_eq!(
            component_import("wasi:http/outgoing-handler@0.2.12", "handle"),
            Some(Network)
        );
        assert_eq!(
            component_import("wasi:http/types@0.2.12", "x"),
            Some(Compute)
        );
        assert_eq!(
            component_import("wasi:cli/terminal-stdout", ""),
            Some(Stdio)
        );
        assert_eq!(
            component_import("warden:host/host@0.1.0", "sleep"),
            Some(Blocking)
        );
        assert_eq!(component_import("warden:host/host@0.1.0", "log"), Some(Log));
        assert_eq!(component_import("my:kv/store", "get"), None);
    }
}
