//! Extism 1.30, run the way `warden run --repeat N [--reuse-domain]` runs a guest, for
//! `bench/extism/run`. The module is compiled once (`PluginBuilder::compile`, Extism's
//! `CompiledPlugin`), outside the timed loop; then either N cycles of
//! `Plugin::new_from_compiled` + one `Plugin::call` + drop, or N calls on one plugin. Prints the
//! loop's time in `warden run`'s format:
//!
//! `extism-bench MODULE --invoke NAME --repeat N [--reuse-domain]`
//!
//! Extism is configured as its defaults leave it: no WASI, no fuel, no timeout, wasmtime's
//! on-demand allocator, epoch interruption with Extism's timer thread.

use std::process::ExitCode;
use std::time::Instant;

use extism::{Manifest, Plugin, PluginBuilder, Wasm};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extism-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), extism::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(module) = args
        .iter()
        .find(|a| a.ends_with(".wat") || a.ends_with(".wasm"))
    else {
        return Err(extism::Error::msg(
            "usage: extism-bench MODULE --invoke NAME --repeat N [--reuse-domain]",
        ));
    };
    let name = value("--invoke").unwrap_or_else(|| "run".into());
    let repeat: u64 = match value("--repeat") {
        None => 1,
        Some(n) => n
            .parse()
            .map_err(|e| extism::Error::msg(format!("--repeat `{n}`: {e}")))?,
    };
    let reuse = args.iter().any(|a| a == "--reuse-domain");

    let compiled = PluginBuilder::new(Manifest::new([Wasm::file(module)])).compile()?;
    // One call, as a user makes it: Extism treats the export's i32 as its return code (non-zero
    // is an error) and hands back the plugin's output bytes (none here).
    let call = |plugin: &mut Plugin| -> Result<(), extism::Error> {
        let out: &[u8] = plugin.call(&name, "")?;
        std::hint::black_box(out);
        Ok(())
    };
    let t0 = Instant::now();
    if reuse {
        let mut plugin = Plugin::new_from_compiled(&compiled)?;
        for _ in 0..repeat {
            call(&mut plugin)?;
        }
    } else {
        for _ in 0..repeat {
            let mut plugin = Plugin::new_from_compiled(&compiled)?;
            call(&mut plugin)?;
        }
    }
    let took = t0.elapsed();
    eprintln!(
        "extism: {repeat} cycles in {:.2}s ({:.2} µs each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / repeat as f64
    );
    Ok(())
}
