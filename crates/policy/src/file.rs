//! The TOML policy file: reading (preset, then overrides, then legality) and writing.

use std::fmt::Write as _;
use std::str::FromStr;

use toml::{Table, Value};

use crate::duration::{format_duration, parse_duration};
use crate::error::PolicyError;
use crate::policy::{CRITICAL_ESCALATION, Policy, default_key, failure_key};
use crate::preset::Preset;
use crate::vocabulary::{Action, Failure, Operation, ParseNameError};

const TOP_KEYS: &str = "preset, critical-escalation, [defaults], [timeouts], [failures]";
const SECTIONS: &[&str] = &["defaults", "timeouts", "failures"];

pub(crate) fn parse(s: &str) -> Result<Policy, PolicyError> {
    let doc: Table = s.parse()?;
    for (key, value) in &doc {
        let known =
            key == "preset" || key == CRITICAL_ESCALATION || SECTIONS.contains(&key.as_str());
        if !known {
            let key = if value.is_table() {
                format!("[{key}]")
            } else {
                key.clone()
            };
            return Err(PolicyError::UnknownKey {
                key,
                expected: TOP_KEYS.to_owned(),
            });
        }
    }

    let base = match doc.get("preset") {
        None => Preset::Server,
        Some(v) => name::<Preset>("preset", v)?,
    };
    let mut policy = Policy::preset(base);

    if let Some(v) = doc.get(CRITICAL_ESCALATION) {
        policy.critical_escalation = name::<Action>(CRITICAL_ESCALATION, v)?;
    }
    if let Some(v) = doc.get("defaults") {
        for (key, v) in section("defaults", v)? {
            let op = entry::<Operation>("defaults", key)?;
            policy.operations[op.index()].default = name::<Action>(&default_key(op), v)?;
        }
    }
    if let Some(v) = doc.get("timeouts") {
        for (key, v) in section("timeouts", v)? {
            let op = entry::<Operation>("timeouts", key)?;
            let here = format!("[timeouts] {op}");
            let Value::Table(fields) = v else {
                return Err(PolicyError::WrongType {
                    key: here,
                    expected: "a table like { after = \"30s\", action = \"rude-abort\" }",
                    found: v.type_str(),
                });
            };
            let entry = &mut policy.operations[op.index()];
            for (field, v) in fields {
                let key = format!("{here}.{field}");
                match field.as_str() {
                    "after" => {
                        let Value::String(text) = v else {
                            return Err(PolicyError::WrongType {
                                key,
                                expected: "a duration string such as \"30s\" or \"infinite\"",
                                found: v.type_str(),
                            });
                        };
                        entry.timeout = parse_duration(text).map_err(|e| e.at(&key))?;
                    }
                    "action" => entry.on_timeout = name::<Action>(&key, v)?,
                    _ => {
                        return Err(PolicyError::UnknownKey {
                            key,
                            expected: "after, action".to_owned(),
                        });
                    }
                }
            }
        }
    }
    if let Some(v) = doc.get("failures") {
        for (key, v) in section("failures", v)? {
            let f = entry::<Failure>("failures", key)?;
            policy.failures[f.index()] = name::<Action>(&failure_key(f), v)?;
        }
    }

    policy.validate()?;
    Ok(policy)
}

/// A section's table, or a type error naming the section.
fn section<'a>(name: &str, v: &'a Value) -> Result<&'a Table, PolicyError> {
    v.as_table().ok_or_else(|| PolicyError::WrongType {
        key: format!("[{name}]"),
        expected: "a table",
        found: v.type_str(),
    })
}

/// A section's key, which must name an operation or a failure.
fn entry<T: FromStr<Err = ParseNameError>>(section: &str, key: &str) -> Result<T, PolicyError> {
    key.parse::<T>().map_err(|e| PolicyError::UnknownKey {
        key: format!("[{section}] {key}"),
        expected: e.expected,
    })
}

/// A string value that must be a name of `T`'s vocabulary.
fn name<T: FromStr<Err = ParseNameError>>(key: &str, v: &Value) -> Result<T, PolicyError> {
    let Value::String(text) = v else {
        return Err(PolicyError::WrongType {
            key: key.to_owned(),
            expected: "a string",
            found: v.type_str(),
        });
    };
    text.parse::<T>().map_err(|e| PolicyError::UnknownName {
        key: key.to_owned(),
        kind: e.kind,
        value: e.value,
        expected: e.expected,
    })
}

pub(crate) fn write(p: &Policy) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Warden escalation policy: `warden policy check FILE` validates it."
    );
    let _ = writeln!(out, "preset = \"{}\"", p.base_preset());
    let _ = writeln!(
        out,
        "{CRITICAL_ESCALATION} = \"{}\"",
        p.critical_escalation()
    );

    let op_width = Operation::ALL
        .iter()
        .map(|o| o.name().len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "\n[defaults]");
    for &op in Operation::ALL {
        let _ = writeln!(out, "{op:<op_width$} = \"{}\"", p.operation(op).default);
    }
    let _ = writeln!(out, "\n[timeouts]");
    for &op in Operation::ALL {
        let o = p.operation(op);
        let _ = writeln!(
            out,
            "{op:<op_width$} = {{ after = \"{}\", action = \"{}\" }}",
            format_duration(o.timeout),
            o.on_timeout
        );
    }
    let f_width = Failure::ALL
        .iter()
        .map(|f| f.name().len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "\n[failures]");
    for &f in Failure::ALL {
        let _ = writeln!(out, "{f:<f_width$} = \"{}\"", p.failure(f));
    }
    out
}
