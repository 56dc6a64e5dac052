//! `warden serve`'s configuration file (TOML): read, checked and resolved before anything
//! listens. Every error names the key (and the app) it is about; unknown keys are refused.
//!
//! Components are only *named* here (a path relative to the file's directory); reading and
//! checking them is the server's job, once the runtime exists.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use warden::{Grant, Operation, Policy};

use crate::size::parse_size;

/// The largest configuration file read (it is a few lines; a bound keeps a wrong path cheap).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The configuration as written. Keys are kebab-case; every key but `[[app]]` is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    listen: Option<String>,
    admin: Option<String>,
    policy: Option<String>,
    drain: Option<String>,
    memory_budget: Option<String>,
    admission: Option<RawAdmission>,
    #[serde(default, rename = "app")]
    apps: Vec<RawApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAdmission {
    max_in_flight: Option<i64>,
    queue: Option<i64>,
    retry_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawApp {
    name: String,
    route: String,
    component: String,
    deadline: Option<String>,
    max_memory: Option<String>,
    reserve: Option<String>,
    instance_reuse: Option<i64>,
    recycle_memory: Option<String>,
    restart_intensity: Option<RawIntensity>,
    cool_down: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    grant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawIntensity {
    unloads: i64,
    within: String,
}

/// A checked configuration.
#[derive(Debug)]
pub struct ServeConfig {
    /// The file it came from, as given (`(built-in)` without one), for later errors.
    pub file: String,
    /// Where requests are served (`port 0`: any free port; the bound one is printed).
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz`, `/metrics` and `/admin/...` are served.
    pub admin: SocketAddr,
    /// The escalation policy every failure goes through.
    pub policy: Policy,
    /// How long SIGTERM waits for requests in flight before the runtime's exit.
    pub drain: Duration,
    /// The process-wide guest memory budget (default: what the machine can give).
    pub memory_budget: Option<u64>,
    /// Admission limits.
    pub admission: AdmissionConfig,
    /// The apps, in file order.
    pub apps: Vec<AppConfig>,
}

/// How many requests run at once, and how many may wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Requests in flight at most (a request holds its place until its call has ended).
    pub max_in_flight: usize,
    /// Requests that may wait for a place; beyond them, 503 with `Retry-After`.
    pub queue: usize,
    /// The `Retry-After` given with a refusal.
    pub retry_after: Duration,
}

/// Where an app's component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentSource {
    /// A file (already resolved against the config file's directory).
    File(PathBuf),
    /// Warden's bundled example component.
    Example,
}

/// One app: a `wasi:http/proxy` component served under a path prefix.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Its name (metrics labels, `/admin/apps/NAME/restore`).
    pub name: String,
    /// The path prefix it serves; the longest matching prefix wins.
    pub route: String,
    /// The component.
    pub component: ComponentSource,
    /// Each request's deadline (`None`: unbounded, which the server allows but does not advise).
    pub deadline: Option<Duration>,
    /// Linear memory each of its domains may hold.
    pub max_memory: u64,
    /// Memory gate reservation taken for each request before guest code runs.
    pub reserve: Option<u64>,
    /// Requests a domain serves before it is unloaded (1: a fresh domain per request).
    pub instance_reuse: u64,
    /// With reuse: a domain holding more memory than this after a request is unloaded.
    pub recycle_memory: Option<u64>,
    /// More than this many failure unloads within the window quarantines the app.
    pub restart_intensity: Intensity,
    /// How long a quarantine lasts (unless an operator restores the app sooner).
    pub cool_down: Duration,
    /// Hosts outbound HTTP may reach; empty denies all.
    pub allowed_outbound_hosts: Vec<String>,
    /// What its component may import: `safe` plus the `grant` key's presets and categories
    /// (checked when the component is loaded, before anything listens).
    pub grant: Grant,
}

/// Erlang's restart intensity: more than `unloads` within `within` is too many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Unloads tolerated within the window.
    pub unloads: u32,
    /// The window.
    pub within: Duration,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
/// The drain bound when none is given (shortened to fit below the policy's exit bound).
const DEFAULT_DRAIN: Duration = Duration::from_secs(20);
const DEFAULT_MAX_MEMORY: u64 = 64 << 20;
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
const DEFAULT_INTENSITY: Intensity = Intensity {
    unloads: 5,
    within: Duration::from_secs(30),
};
const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(30);
/// The bundled example's grant: `safe` plus `network`, for its route that tries an outbound
/// request (which `allowed-outbound-hosts` still denies).
pub const EXAMPLE_GRANT: &str = "network";
/// The bundled example's deadline: short, so its hostile routes end quickly.
const EXAMPLE_DEADLINE: Duration = Duration::from_secs(2);

/// A configuration error: which key (of which app) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    /// The config file, as given (or `(built-in)`).
    pub file: String,
    /// The key, e.g. `listen` or `app "hello".max-memory`.
    pub key: String,
    /// What is wrong, with the value.
    pub reason: String,
}

impl ServeConfig {
    /// The configuration without a file: the bundled example app at `/`.
    pub fn example() -> ServeConfig {
        let raw = RawConfig::default();
        let mut config = resolve(raw, Path::new("."), "(built-in)").expect("defaults are valid");
        config.apps.push(AppConfig {
            name: "example".into(),
            route: "/".into(),
            component: ComponentSource::Example,
            deadline: Some(EXAMPLE_DEADLINE),
            max_memory: DEFAULT_MAX_MEMORY,
            reserve: None,
            instance_reuse: 1,
            recycle_memory: None,
            restart_intensity: DEFAULT_INTENSITY,
            cool_down: DEFAULT_COOL_DOWN,
            allowed_outbound_hosts: Vec::new(),
            grant: Grant::SAFE.union(EXAMPLE_GRANT.parse().expect("a valid grant")),
        });
        config
    }

    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<ServeConfig, ConfigError> {
        let file = path.display().to_string();
        let bytes =
            crate::input::read_bounded(path, MAX_CONFIG_BYTES, false).map_err(|e| ConfigError {
                file: file.clone(),
                key: "(file)".into(),
                reason: e.to_string(),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: "not UTF-8 text".into(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        ServeConfig::from_toml(&text, base, &file)
    }

    /// Checks configuration text; component paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path, file: &str) -> Result<ServeConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.into(),
            key: toml_key(&e, text),
            reason: e.message().trim().to_string(),
        })?;
        let config = resolve(raw, base, file)?;
        if config.apps.is_empty() {
            return Err(ConfigError {
                file: file.into(),
                key: "app".into(),
                reason: "no [[app]] is configured".into(),
            });
        }
        Ok(config)
    }
}

/// Where in the file a TOML error is: its line (the message names the key itself).
fn toml_key(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "(syntax)".into(),
    }
}

fn resolve(raw: RawConfig, base: &Path, file: &str) -> Result<ServeConfig, ConfigError> {
    let err = |key: &str, reason: String| ConfigError {
        file: file.into(),
        key: key.into(),
        reason,
    };
    let addr = |key: &str, value: Option<&str>, default: &str| {
        let v = value.unwrap_or(default);
        v.parse::<SocketAddr>().map_err(|_| {
            err(
                key,
                format!("`{v}` is not an IP:PORT address (e.g. 127.0.0.1:8080)"),
            )
        })
    };
    let listen = addr("listen", raw.listen.as_deref(), DEFAULT_LISTEN)?;
    let admin = addr("admin", raw.admin.as_deref(), DEFAULT_ADMIN)?;
    if listen == admin && listen.port() != 0 {
        return Err(err(
            "admin",
            format!("`{admin}` is also the listen address"),
        ));
    }
    let policy_spec = raw.policy.as_deref().unwrap_or("server");
    // A policy file is relative to the config file, like components.
    let policy_path = base.join(policy_spec);
    let policy = if policy_spec.parse::<warden::Preset>().is_err() && policy_path.exists() {
        Policy::from_file(&policy_path)
    } else {
        Policy::load(policy_spec)
    }
    .map_err(|e| err("policy", e.to_string()))?;
    let exit_bound = policy.operation(Operation::ProcessExit).timeout;
    let drain = match &raw.drain {
        Some(d) => duration(d).map_err(|r| err("drain", r))?,
        // Leave a fifth of the exit bound for the exit itself.
        None => exit_bound.map_or(DEFAULT_DRAIN, |b| DEFAULT_DRAIN.min(b * 4 / 5)),
    };
    if let Some(bound) = exit_bound
        && drain >= bound
    {
        return Err(err(
            "drain",
            format!(
                "{} is not below the policy's process-exit bound ({}); the drain and the exit \
                 must both fit in it (and in the orchestrator's grace period)",
                warden_policy::format_duration(Some(drain)),
                warden_policy::format_duration(Some(bound)),
            ),
        ));
    }
    let memory_budget = match &raw.memory_budget {
        Some(s) => Some(parse_size(s).map_err(|e| err("memory-budget", e.to_string()))?),
        None => None,
    };
    let a = raw.admission.unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let admission = AdmissionConfig {
        max_in_flight: match a.max_in_flight {
            None => cpus * 4,
            Some(n) => count(n, 1).map_err(|r| err("admission.max-in-flight", r))?,
        },
        queue: match a.queue {
            None => cpus * 16,
            Some(n) => count(n, 0).map_err(|r| err("admission.queue", r))?,
        },
        retry_after: match &a.retry_after {
            None => DEFAULT_RETRY_AFTER,
            Some(d) => duration(d).map_err(|r| err("admission.retry-after", r))?,
        },
    };
    let mut apps: Vec<AppConfig> = Vec::new();
    for (i, app) in raw.apps.into_iter().enumerate() {
        let app = resolve_app(app, i, base, file)?;
        if let Some(other) = apps.iter().find(|o| o.name == app.name) {
            return Err(err(
                &format!("app \"{}\".name", app.name),
                format!("the name is used twice (also for route `{}`)", other.route),
            ));
        }
        if let Some(other) = apps.iter().find(|o| o.route == app.route) {
            return Err(err(
                &format!("app \"{}\".route", app.name),
                format!("`{}` is also app \"{}\"'s route", app.route, other.name),
            ));
        }
        apps.push(app);
    }
    Ok(ServeConfig {
        file: file.into(),
        listen,
        admin,
        policy,
        drain,
        memory_budget,
        admission,
        apps,
    })
}

fn resolve_app(app: RawApp, i: usize, base: &Path, file: &str) -> Result<AppConfig, ConfigError> {
    let who = if app.name.is_empty() {
        format!("app[{i}]")
    } else {
        format!("app \"{}\"", app.name)
    };
    let err = |key: &str, reason: String| ConfigError {
        file: file.into(),
        key: format!("{who}.{key}"),
        reason,
    };
    if app.name.is_empty()
        || !app
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            "name",
            format!(
                "`{}` must be non-empty letters, digits, `-` or `_`",
                app.name
            ),
        ));
    }
    if !app.route.starts_with('/') {
        return Err(err("route", format!("`{}` must start with `/`", app.route)));
    }
    if app.component.is_empty() {
        return Err(err("component", "must name a file".into()));
    }
    let size = |key: &str, v: &Option<String>| match v {
        None => Ok(None),
        Some(s) => parse_size(s).map(Some).map_err(|e| err(key, e.to_string())),
    };
    let instance_reuse = match app.instance_reuse {
        None => 1,
        Some(n) => count(n, 1).map_err(|r| err("instance-reuse", r))? as u64,
    };
    let recycle_memory = size("recycle-memory", &app.recycle_memory)?;
    if recycle_memory.is_some() && instance_reuse == 1 {
        return Err(err(
            "recycle-memory",
            "needs instance-reuse above 1 (a fresh domain per request is never recycled)".into(),
        ));
    }
    let restart_intensity = match app.restart_intensity {
        None => DEFAULT_INTENSITY,
        Some(r) => Intensity {
            unloads: u32::try_from(
                count(r.unloads, 0).map_err(|e| err("restart-intensity.unloads", e))?,
            )
            .map_err(|_| err("restart-intensity.unloads", "too large".into()))?,
            within: duration(&r.within).map_err(|e| err("restart-intensity.within", e))?,
        },
    };
    Ok(AppConfig {
        component: ComponentSource::File(base.join(&app.component)),
        deadline: match &app.deadline {
            None => None,
            Some(d) => {
                warden_policy::parse_duration(d).map_err(|e| err("deadline", e.to_string()))?
            }
        },
        max_memory: size("max-memory", &app.max_memory)?.unwrap_or(DEFAULT_MAX_MEMORY),
        reserve: size("reserve", &app.reserve)?,
        instance_reuse,
        recycle_memory,
        restart_intensity,
        cool_down: match &app.cool_down {
            None => DEFAULT_COOL_DOWN,
            Some(d) => duration(d).map_err(|r| err("cool-down", r))?,
        },
        allowed_outbound_hosts: app.allowed_outbound_hosts,
        grant: match &app.grant {
            None => Grant::SAFE,
            Some(g) => Grant::SAFE.union(
                g.parse::<Grant>()
                    .map_err(|e| err("grant", format!("`{g}`: {e}")))?,
            ),
        },
        name: app.name,
        route: app.route,
    })
}

/// A finite duration (`infinite` is refused: these bounds must end).
fn duration(text: &str) -> Result<Duration, String> {
    match warden_policy::parse_duration(text) {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(format!("`{text}` must be finite here")),
        Err(e) => Err(e.to_string()),
    }
}

fn count(n: i64, least: i64) -> Result<usize, String> {
    if n < least {
        return Err(format!("{n} is below the least allowed, {least}"));
    }
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
        ServeConfig::from_toml(text, Path::new("/srv"), "w.toml")
    }

    const APP: &str = "[[app]]\nname = \"hello\"\nroute = \"/\"\ncomponent = \"hello.wasm\"\n";

    #[test]
    fn a_full_config_resolves_every_key() {
        let c = parse(
            r#"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
policy = "sqlserver"
drain = "5s"
memory-budget = "1GiB"
[admission]
max-in-flight = 3
queue = 0
retry-after = "2s"
[[app]]
name = "hello"
route = "/api"
component = "apps/hello.wasm"
deadline = "250ms"
max-memory = "8MiB"
reserve = "1MiB"
instance-reuse = 3
recycle-memory = "4MiB"
restart-intensity = { unloads = 2, within = "10s" }
cool-down = "1s"
allowed-outbound-hosts = ["example.com"]
grant = "stdio,synchronization"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.drain, Duration::from_secs(5));
        assert_eq!(c.memory_budget, Some(1 << 30));
        assert_eq!(
            c.admission,
            AdmissionConfig {
                max_in_flight: 3,
                queue: 0,
                retry_after: Duration::from_secs(2)
            }
        );
        let a = &c.apps[0];
        assert_eq!(
            a.component,
            ComponentSource::File("/srv/apps/hello.wasm".into())
        );
        assert_eq!(a.deadline, Some(Duration::from_millis(250)));
        assert_eq!((a.max_memory, a.reserve), (8 << 20, Some(1 << 20)));
        assert_eq!((a.instance_reuse, a.recycle_memory), (3, Some(4 << 20)));
        assert_eq!(
            a.restart_intensity,
            Intensity {
                unloads: 2,
                within: Duration::from_secs(10)
            }
        );
        assert_eq!(a.allowed_outbound_hosts, ["example.com"]);
        assert_eq!(a.grant.to_string(), "safe,stdio,synchronization");
        assert_eq!(
            c.policy.base_preset(),
            "sqlserver".parse::<warden::Preset>().unwrap()
        );
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = parse(APP).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin.to_string(), DEFAULT_ADMIN);
        assert!(c.admission.max_in_flight >= 4);
        // server's process-exit bound is 25 s: 20 s fits below it.
        assert_eq!(c.drain, DEFAULT_DRAIN);
        assert_eq!(c.apps[0].instance_reuse, 1);
        assert_eq!(c.apps[0].max_memory, DEFAULT_MAX_MEMORY);
        assert_eq!(c.apps[0].grant, Grant::SAFE);
    }

    #[track_caller]
    fn refused(text: &str, key: &str, says: &str) {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.reason.contains(says), "{e}");
        assert!(e.to_string().starts_with("w.toml: "), "{e}");
    }

    #[test]
    fn each_bad_value_is_refused_naming_its_key() {
        refused(&format!("listen = \"nowhere\"\n{APP}"), "listen", "IP:PORT");
        refused(
            &format!("drain = \"5 parsecs\"\n{APP}"),
            "drain",
            "5 parsecs",
        );
        refused(
            &format!("drain = \"30s\"\n{APP}"),
            "drain",
            "process-exit bound (25s)",
        );
        refused(&format!("policy = \"lenient\"\n{APP}"), "policy", "lenient");
        refused(
            &format!("{APP}grant = \"safe,sockets\"\n"),
            "app \"hello\".grant",
            "unknown capability `sockets`",
        );
        refused(
            &format!("{APP}grant = \"\"\n"),
            "app \"hello\".grant",
            "empty grant",
        );
        refused(
            &format!("[admission]\nmax-in-flight = 0\n{APP}"),
            "admission.max-in-flight",
            "below",
        );
        refused(
            &format!("{APP}max-memory = \"8XB\"\n"),
            "app \"hello\".max-memory",
            "unknown unit",
        );
        refused(
            &format!("{APP}deadline = \"soon\"\n"),
            "app \"hello\".deadline",
            "soon",
        );
        refused(
            &format!("{APP}recycle-memory = \"1MiB\"\n"),
            "app \"hello\".recycle-memory",
            "instance-reuse",
        );
        refused(
            &format!("{APP}instance-reuse = 0\n"),
            "app \"hello\".instance-reuse",
            "below",
        );
        refused(
            &format!("{APP}cool-down = \"infinite\"\n"),
            "app \"hello\".cool-down",
            "finite",
        );
        refused(
            "[[app]]\nname = \"a\"\nroute = \"x\"\ncomponent = \"a.wasm\"\n",
            "app \"a\".route",
            "start with",
        );
        refused("listen = \"127.0.0.1:0\"\n", "app", "no [[app]]");
    }

    #[test]
    fn duplicate_names_and_routes_are_refused() {
        refused(&format!("{APP}{APP}"), "app \"hello\".name", "used twice");
        let two =
            format!("{APP}[[app]]\nname = \"other\"\nroute = \"/\"\ncomponent = \"o.wasm\"\n");
        refused(&two, "app \"other\".route", "also app \"hello\"'s route");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = parse(&format!("lisen = \"127.0.0.1:0\"\n{APP}")).unwrap_err();
        assert!(e.reason.contains("unknown field `lisen`"), "{e}");
        let e = parse(&format!("{APP}max_memory = \"1MiB\"\n")).unwrap_err();
        assert!(e.reason.contains("unknown field `max_memory`"), "{e}");
        assert!(
            e.reason.contains("max-memory"),
            "the allowed keys are listed: {e}"
        );
    }
}
