//! The names the operator gives out, read from its sources: the metrics it registers (with
//! their help text) and the reasons of the Events it publishes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The operator's sources, tests left out.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if name.ends_with(".rs") && !name.ends_with("tests.rs") && name != "fixtures.rs" {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("a readable source")
}

/// Each metric the operator registers (`registry.register`) or serves from the watched state
/// (`Gauge::new`), without the `greenlight_` prefix, with its help text.
pub fn metrics() -> Vec<(String, String)> {
    let registration =
        regex::Regex::new(r#"(?:\.register|Gauge::new)\(\s*"([a-z_]+)",\s*"((?:[^"\\]|\\.)*)""#)
            .expect("constant pattern");
    let mut out = Vec::new();
    for file in sources(&root().join("crates/greenlight/src")) {
        let text = read(&file);
        for c in registration.captures_iter(&text) {
            out.push((c[1].to_string(), c[2].replace("\\\"", "\"")));
        }
    }
    out
}

/// Every Event reason the operator publishes: the machine's transitions, the reasons the
/// audit trail's entries are announced under, those the shell announces itself, and why a
/// Stage is reported invalid.
pub fn event_reasons() -> BTreeSet<String> {
    let transition = regex::Regex::new(r#"=> "([A-Z][A-Za-z]+)""#).expect("constant pattern");
    let audited = regex::Regex::new(r#"=> \("([A-Z][A-Za-z]+)", (?:true|false)\)"#)
        .expect("constant pattern");
    let announced =
        regex::Regex::new(r"Announcement \{[^;]*?reason: ([^\n]*)").expect("constant pattern");
    let invalid =
        regex::Regex::new(r#"\((?:stage, )?"([A-Z][A-Za-z]+)", (?:why|message|e\.to_string)"#)
            .expect("constant pattern");
    let literal = regex::Regex::new(r#""([A-Z][A-Za-z]+)""#).expect("constant pattern");
    let events = read(&root().join("crates/greenlight-core/src/machine/events.rs"));
    let mut reasons: BTreeSet<String> = transition
        .captures_iter(&events)
        .map(|c| c[1].to_string())
        .collect();
    for file in sources(&root().join("crates/greenlight/src/controller")) {
        let text = read(&file);
        reasons.extend(audited.captures_iter(&text).map(|c| c[1].to_string()));
        for line in announced.captures_iter(&text) {
            reasons.extend(literal.captures_iter(&line[1]).map(|c| c[1].to_string()));
        }
        reasons.extend(invalid.captures_iter(&text).map(|c| c[1].to_string()));
    }
    reasons
}
