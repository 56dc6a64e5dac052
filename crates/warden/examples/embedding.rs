//! The README's embedding snippet, compiled: the lines between the `README` markers are the
//! README's "Embedding" block, indented (a test in `tests/core.rs` checks that they match).
//!
//! `cargo run -p warden --example embedding` in a directory holding a `plugin.wasm` whose
//! `handle` export takes no parameters.

// Laid out as the README shows it, not as rustfmt would.
#[rustfmt::skip]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // README begin
    use warden::{CallOptions, DomainConfig, Runtime, RuntimeConfig};

    let rt = Runtime::new(RuntimeConfig::default())?;           // server policy, machine-sized budget
    rt.subscribe(|event| eprintln!("{}", event.to_json()));     // every decision, as it happens
    let module = rt.load_module(&std::fs::read("plugin.wasm")?)?; // cached by content digest
    let domain = rt.create_domain(&module, DomainConfig::default()).await?;
    let call = domain.call("handle", &[], CallOptions {
        deadline: Some(std::time::Duration::from_millis(200)),
        reserve: Some(16 << 20),                                 // memory gate: refuse before starting
        ..CallOptions::default()
    })?;
    // call.abort() from any task; call.join().await for the one outcome.
    let outcome = call.join().await;
    domain.unload().await;                                       // finalizer, then critical release
    // README end
    println!("{outcome:?}");
    Ok(())
}
