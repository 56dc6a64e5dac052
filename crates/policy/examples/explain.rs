//! Prints a policy as `warden policy explain` would, then as a complete policy file.
//!
//! `cargo run -p warden-policy --example explain -- [PRESET|FILE]` (default: `server`), e.g.
//! `-- sqlserver` or `-- crates/policy/examples/sqlserver-like.toml`.

use std::process::ExitCode;

use warden_policy::Policy;

fn main() -> ExitCode {
    let spec = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "server".to_owned());
    match Policy::load(&spec) {
        Ok(policy) => {
            println!("{}", policy.explain());
            print!("{}", policy.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
