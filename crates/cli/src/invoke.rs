//! What `warden run` calls: `--invoke NAME`, `--invoke 'NAME(ARGS)'` with arguments in WAVE
//! (the value syntax of `wasmtime run --invoke`), or the guest's command entry point
//! (`_start` of a core module, `wasi:cli/run` of a component). Each is parsed and checked
//! against the module before any domain is created; results are printed in WAVE.

use warden::wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
use warden::wasmtime::component::wasm_wave::wasm::WasmValue;
use warden::wasmtime::component::{self, wasm_wave};
use warden::{CallOutput, Domain, Module, Val};

use crate::output::escape;

/// One call of the run, checked against the module.
#[derive(Clone)]
pub struct Invocation {
    /// The export's name as shown (a component's: its full path).
    pub name: String,
    args: Args,
    /// The guest's command entry point (its result is its exit status, not printed).
    pub command: bool,
}

#[derive(Clone)]
enum Args {
    Core(Vec<Val>),
    Component(Vec<component::Val>),
}

impl Invocation {
    /// The guest's command entry point: `_start`, or a component's `wasi:cli/run`.
    pub fn command(module: &Module) -> Result<Invocation, String> {
        if module.is_component() {
            let run = module.component_func("wasi:cli/run#run").map_err(|_| {
                "component does not export `wasi:cli/run` (not a command); use --invoke NAME"
                    .to_string()
            })?;
            return Ok(Invocation {
                name: run.name,
                args: Args::Component(Vec::new()),
                command: true,
            });
        }
        let mut start = Invocation::parse(module, "_start").map_err(|e| {
            if e.starts_with("module has no export") {
                "module has no `_start` export (not a WASI command); use --invoke NAME".into()
            } else {
                e
            }
        })?;
        start.command = true;
        Ok(start)
    }

    /// `NAME` or `NAME(ARGS)`, checked against `module`'s export. The error is one line that
    /// names what was wrong.
    pub fn parse(module: &Module, text: &str) -> Result<Invocation, String> {
        let (name, params) = match text.find('(') {
            Some(i) => (text[..i].trim_end(), Some(&text[i..])),
            None => (text, None),
        };
        let shown = escape(name, false);
        let args = match module.wasmtime() {
            Some(core) => {
                let ty = match core.get_export(name) {
                    Some(warden::wasmtime::ExternType::Func(ty)) => ty,
                    Some(_) => return Err(format!("export `{shown}` is not a function")),
                    None => return Err(format!("module has no export `{shown}`")),
                };
                let types: Vec<warden::wasmtime::ValType> = ty.params().collect();
                let described = || {
                    types
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Args::Core(match params {
                    None if !types.is_empty() => {
                        return Err(format!(
                            "export `{shown}` takes parameters ({}); give them in WAVE: \
                             --invoke '{shown}(...)'",
                            described()
                        ));
                    }
                    None => Vec::new(),
                    Some(params) => wave_args::<Val>(text, name, params, &types, &described())?,
                })
            }
            None => {
                let export = module.component_func(name).map_err(|e| e.to_string())?;
                let types = export.params();
                let name = export.name.clone();
                let args = match params {
                    None if !types.is_empty() => {
                        return Err(format!(
                            "export `{}` takes parameters ({}); give them in WAVE: \
                             --invoke '{shown}(...)'",
                            escape(&name, false),
                            export
                                .func
                                .params()
                                .map(|(n, _)| n.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    None => Vec::new(),
                    Some(params) => wave_args::<component::Val>(
                        text,
                        &name,
                        params,
                        &types,
                        &export.describe_params(),
                    )?,
                };
                return Ok(Invocation {
                    name,
                    args: Args::Component(args),
                    command: false,
                });
            }
        };
        Ok(Invocation {
            name: name.to_string(),
            args,
            // `--invoke _start` is the command, as without --invoke.
            command: name == "_start",
        })
    }

    /// Runs the call in `domain`.
    pub async fn call(
        &self,
        domain: &Domain,
        options: warden::CallOptions,
    ) -> Result<CallOutput, warden::Error> {
        match &self.args {
            Args::Core(args) => domain.invoke(&self.name, args, options).await,
            Args::Component(args) => domain.invoke_component(&self.name, args, options).await,
        }
    }
}

/// The WAVE arguments `params` (`(1, "two")`) of `text`, typed by `types`.
fn wave_args<V: WasmValue + 'static>(
    text: &str,
    name: &str,
    params: &str,
    types: &[V::Type],
    described: &str,
) -> Result<Vec<V>, String> {
    let bad = |e: &dyn std::fmt::Display| {
        format!(
            "--invoke `{}`: arguments for `{}`: {} (it takes ({}))",
            escape(text, false),
            escape(name, false),
            escape(&e.to_string(), false),
            escape(described, false)
        )
    };
    if !params.trim_end().ends_with(')') {
        return Err(bad(&"the arguments must end with `)`"));
    }
    // The name is the module's to choose (`_start`, `wasi:cli/run#run`), not always a WAVE
    // label: the arguments are parsed behind a label of the same length, so error
    // positions still point into what was written.
    let source = format!("{}{params}", "f".repeat(name.len().max(1)));
    let call = UntypedFuncCall::parse(&source).map_err(|e| bad(&e))?;
    call.to_wasm_params::<V>(types.iter()).map_err(|e| bad(&e))
}

/// A call's results as `wasmtime run --invoke` prints them: one value in WAVE, several (or
/// none) as a WAVE tuple. A value WAVE cannot show (a reference, a resource) is shown as
/// `<ref>`.
pub fn render(out: &CallOutput) -> String {
    let shown: Vec<String> = if !out.component_values.is_empty() {
        out.component_values.iter().map(wave).collect()
    } else {
        out.values.iter().map(wave).collect()
    };
    match shown.as_slice() {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

fn wave(v: &impl WasmValue) -> String {
    wasm_wave::to_string(v).unwrap_or_else(|_| "<ref>".into())
}

/// Whether a command's result says it failed (`wasi:cli/run` returned an error): exit 1,
/// as wasmtime's CLI does.
pub fn command_failed(out: &CallOutput) -> bool {
    matches!(
        out.component_values.as_slice(),
        [component::Val::Result(Err(_))]
    )
}
