//! The CRD reference pages, rendered from `crds/greenlight.yaml`: one page per kind, with
//! every field of its spec and status, and an index page that lists the kinds.

use serde::Deserialize;
use serde_json::Value;

/// One generated page: its path under `docs/src` and its text.
pub struct Page {
    pub path: String,
    pub text: String,
}

const GENERATED: &str = "Generated from `crds/greenlight.yaml` by `tests/book.rs`; do not edit it by hand: `make docs` writes it again.";

/// Every page the CRDs make, the index first.
pub fn pages(yaml: &str) -> Vec<Page> {
    let crds: Vec<Value> = serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("crds/greenlight.yaml is YAML"))
        .filter(|crd| !crd.is_null())
        .collect();
    let mut pages = vec![Page {
        path: "reference/crds.md".into(),
        text: index(&crds),
    }];
    for crd in &crds {
        pages.push(Page {
            path: format!("reference/crds/{}.md", kind(crd).to_lowercase()),
            text: kind_page(crd),
        });
    }
    pages
}

fn kind(crd: &Value) -> &str {
    crd["spec"]["names"]["kind"].as_str().expect("a kind")
}

fn index(crds: &[Value]) -> String {
    let mut out = String::from("# CRD fields\n\n");
    out += GENERATED;
    out += "\n\nEach page lists every field of the kind's `spec` and `status` with its path, type, whether it is required, its bounds and default, and what it means. A path like `spec.strategy.canary.steps[].setWeight` names a field of each item of a list; `.<key>` names each value of a map.\n\n";
    out += "| Kind | Resource | Short names | What it is |\n| --- | --- | --- | --- |\n";
    for crd in crds {
        let names = &crd["spec"]["names"];
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        out += &format!(
            "| [{}](crds/{}.md) | `{}.{}` | {} | {} |\n",
            kind(crd),
            kind(crd).to_lowercase(),
            names["plural"].as_str().unwrap_or_default(),
            crd["spec"]["group"].as_str().unwrap_or_default(),
            list(&names["shortNames"]),
            text(&schema["description"]),
        );
    }
    out
}

fn kind_page(crd: &Value) -> String {
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let names = &crd["spec"]["names"];
    let mut out = format!(
        "# {}\n\n{GENERATED}\n\n{}\n\n",
        kind(crd),
        text(&schema["description"])
    );
    out += &format!(
        "`{}.{}`, version `{}`, {}; short names {}; categories {}.\n",
        names["plural"].as_str().unwrap_or_default(),
        crd["spec"]["group"].as_str().unwrap_or_default(),
        version["name"].as_str().unwrap_or_default(),
        crd["spec"]["scope"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase(),
        list(&names["shortNames"]),
        list(&names["categories"]),
    );
    if let Some(columns) = version["additionalPrinterColumns"].as_array() {
        let shown: Vec<String> = columns
            .iter()
            .map(|c| {
                format!(
                    "{} (`{}`)",
                    c["name"].as_str().unwrap_or_default(),
                    c["jsonPath"].as_str().unwrap_or_default()
                )
            })
            .collect();
        out += &format!("`kubectl get` shows {}.\n", shown.join(", "));
    }
    for part in ["spec", "status"] {
        let Some(node) = schema["properties"].get(part) else {
            continue;
        };
        out += &format!("\n## {part}\n\n");
        fields(&mut out, part, node);
    }
    out
}

/// Every field under `node`, depth first, one list item each.
fn fields(out: &mut String, path: &str, node: &Value) {
    let required: Vec<&str> = node["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = node["properties"].as_object() else {
        return;
    };
    for (name, field) in properties {
        let path = format!("{path}.{name}");
        let facts = facts(field, required.contains(&name.as_str()));
        let description = text(&field["description"]);
        let sep = if description.is_empty() { "" } else { ": " };
        *out += &format!("- **`{path}`** ({}){sep}{description}\n", facts.join(", "));
        descend(out, &path, field);
    }
}

/// The fields of a list's items or of a map's values, as their own paths.
fn descend(out: &mut String, path: &str, field: &Value) {
    match field["type"].as_str() {
        Some("array") => fields(out, &format!("{path}[]"), &field["items"]),
        Some("object") if field["additionalProperties"].is_object() => fields(
            out,
            &format!("{path}.<key>"),
            &field["additionalProperties"],
        ),
        _ => fields(out, path, field),
    }
}

/// Type, requiredness, bounds, pattern, values and default of one field.
fn facts(field: &Value, required: bool) -> Vec<String> {
    let mut facts = vec![type_of(field)];
    if required {
        facts.push("required".into());
    }
    facts.extend(range(field, "minimum", "maximum", ""));
    facts.extend(range(field, "minLength", "maxLength", " characters"));
    facts.extend(range(field, "minItems", "maxItems", " items"));
    if let Some(pattern) = field["pattern"].as_str() {
        facts.push(format!("pattern `{pattern}`"));
    }
    if let Some(values) = field["enum"].as_array() {
        facts.push(format!("one of {}", list(&Value::Array(values.clone()))));
    }
    if let Some(default) = field.get("default") {
        facts.push(format!("default `{default}`"));
    }
    if field["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
        facts.push("any fields kept".into());
    }
    facts
}

fn type_of(field: &Value) -> String {
    let base = field["type"].as_str().unwrap_or("any");
    let format = field["format"]
        .as_str()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    match base {
        "array" => format!("list of {}", type_of(&field["items"])),
        "object" if field["additionalProperties"].is_object() => {
            format!("map of {}", type_of(&field["additionalProperties"]))
        }
        _ => format!("{base}{format}"),
    }
}

fn range(field: &Value, low: &str, high: &str, unit: &str) -> Option<String> {
    let number = |key: &str| field.get(key).and_then(Value::as_f64).map(number);
    match (number(low), number(high)) {
        (Some(a), Some(b)) => Some(format!("{a}..{b}{unit}")),
        (Some(a), None) => Some(format!("at least {a}{unit}")),
        (None, Some(b)) => Some(format!("at most {b}{unit}")),
        (None, None) => None,
    }
}

fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn list(values: &Value) -> String {
    let items: Vec<String> = values
        .as_array()
        .map(|v| {
            v.iter()
                .map(|s| format!("`{}`", s.as_str().map_or(s.to_string(), str::to_string)))
                .collect()
        })
        .unwrap_or_default();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A description on one line, with `<` outside code spans escaped so Markdown keeps it.
fn text(description: &Value) -> String {
    let joined = description
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 0 {
                part.replace('<', "&lt;")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}
