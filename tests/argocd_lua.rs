//! Greenlight's Argo CD customizations (`resource_customizations/`) run under the real
//! `lua5.1`, in a sandbox shaped like Argo CD's (base, table, package, `os.time`/`os.date`
//! only, no string methods), and checked against their fixtures the way Argo CD's own tests
//! read them: every `<Kind>/health_test.yaml` and every `<Kind>/actions/action_test.yaml`
//! found under `resource_customizations/`, so a new kind is tested by adding its files.
//! Each test checks all its fixtures, then fails listing every one that did not pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

#[path = "argocd_lua/runner.rs"]
mod runner;
use runner::{Lua, Outcome, normalize};

const VALID_STATUSES: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];
/// A created object's name ends in a UTC `YYYYmmddHHMMSS` stamp...
const STAMP_DIGITS: usize = 14;
/// ...no further than this from the time the test runs.
const STAMP_TOLERANCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn customizations() -> PathBuf {
    manifest_dir().join("resource_customizations")
}

/// A path as the failure list shows it: relative to the repository.
fn shown(path: &Path) -> String {
    path.strip_prefix(manifest_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// YAML as sigs.k8s.io/yaml reads it into JSON (timestamps stay strings; merge keys merged).
fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    yaml.apply_merge().map_err(|e| e.to_string())?;
    serde_json::to_value(yaml)
        .map(normalize)
        .map_err(|e| e.to_string())
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", shown(path)))
}

fn load_yaml(path: &Path) -> Result<Value, String> {
    parse_yaml(&read_text(path)?).map_err(|e| format!("{}: {e}", shown(path)))
}

/// A field of a JSON object, absent and null alike as null (as Python's `dict.get`).
fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Fixtures and the failure list.

/// Every directory under `dir`, `dir` first, in name order.
fn directories(dir: &Path) -> Vec<PathBuf> {
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    children.sort();
    let mut all = vec![dir.to_path_buf()];
    for child in children {
        all.extend(directories(&child));
    }
    all
}

/// Directories with a health check: `<group>/<Kind>/` holding `health.lua` or its tests.
fn health_dirs() -> Vec<PathBuf> {
    directories(&customizations())
        .into_iter()
        .filter(|d| d.join("health.lua").exists() || d.join("health_test.yaml").exists())
        .collect()
}

/// Directories with actions: `<group>/<Kind>/actions/` holding `action_test.yaml`.
fn action_dirs() -> Vec<PathBuf> {
    directories(&customizations())
        .into_iter()
        .filter(|d| d.file_name().is_some_and(|n| n == "actions"))
        .filter(|d| d.join("action_test.yaml").exists())
        .collect()
}

fn input_path(test: &Value) -> &str {
    test.get("inputPath")
        .and_then(Value::as_str)
        .unwrap_or("<no inputPath>")
}

fn load_input(dir: &Path, test: &Value) -> Result<Value, String> {
    let input = test
        .get("inputPath")
        .and_then(Value::as_str)
        .ok_or("no inputPath")?;
    load_yaml(&dir.join(input))
}

/// How many fixtures were checked, and why each failing one failed.
#[derive(Default)]
struct Report {
    checked: usize,
    failures: Vec<String>,
}

impl Report {
    fn record(&mut self, fixture: String, result: Result<(), String>) {
        self.checked += 1;
        if let Err(why) = result {
            self.failures.push(format!("FAIL {fixture}: {why}"));
        }
    }

    fn assert_all_passed(&self, what: &str) {
        assert!(
            self.checked > 0,
            "found no {what} fixtures under {}",
            customizations().display()
        );
        assert!(
            self.failures.is_empty(),
            "{} of {} {what} fixtures failed:\n\n{}\n",
            self.failures.len(),
            self.checked,
            self.failures.join("\n\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Health checks: `health_test.yaml`.

fn check_health_file(lua: &Lua, dir: &Path, report: &mut Report) {
    let test_file = dir.join("health_test.yaml");
    let doc = match load_yaml(&test_file) {
        Ok(doc) => doc,
        Err(why) => return report.record(shown(&test_file), Err(why)),
    };
    let Some(tests) = doc.get("tests").and_then(Value::as_array) else {
        return report.record(shown(&test_file), Err("no `tests` list".to_string()));
    };
    for test in tests {
        let fixture = format!("{} (inputPath {})", shown(&test_file), input_path(test));
        let result = load_input(dir, test).and_then(|obj| {
            let script = read_text(&dir.join("health.lua"))?;
            check_health(lua, &script, &obj, field(test, "healthStatus"))
        });
        report.record(fixture, result);
    }
}

/// The script's {status, message} equals the fixture's exactly, and the status is one Argo
/// CD knows.
fn check_health(lua: &Lua, script: &str, obj: &Value, want: &Value) -> Result<(), String> {
    let status = want.get("status").ok_or("healthStatus has no status")?;
    let want = json!({ "status": status, "message": field(want, "message") });
    let got = match lua.run(script, obj)? {
        Outcome::Returned(res @ Value::Object(_)) => {
            json!({ "status": field(&res, "status"), "message": field(&res, "message") })
        }
        Outcome::Returned(other) => other,
        failed => return Err(failed.to_string()),
    };
    let known = field(&got, "status")
        .as_str()
        .is_some_and(|s| VALID_STATUSES.contains(&s));
    if got == want && known {
        Ok(())
    } else {
        Err(format!("\n   got  {got}\n   want {want}"))
    }
}

// ---------------------------------------------------------------------------------------
// Action discovery: `discoveryTests` in `actions/action_test.yaml`.

fn check_discovery_file(lua: &Lua, dir: &Path, report: &mut Report) {
    let test_file = dir.join("action_test.yaml");
    let doc = match load_yaml(&test_file) {
        Ok(doc) => doc,
        Err(why) => return report.record(shown(&test_file), Err(why)),
    };
    for test in list(&doc, "discoveryTests") {
        let fixture = format!(
            "{} discovery (inputPath {})",
            shown(&test_file),
            input_path(test)
        );
        let result = load_input(dir, test).and_then(|obj| {
            let script = read_text(&dir.join("discovery.lua"))?;
            check_discovery(lua, &script, &obj, field(test, "result"))
        });
        report.record(fixture, result);
    }
}

/// An offered action as Argo CD reads it: name, disabled (a non-boolean is false), icon
/// class and display name (as JSON text; absent is "").
type Offered = (String, bool, String, String);

fn offered(name: &str, action: &Value) -> Result<Offered, String> {
    let empty = Map::new();
    let fields = match action {
        Value::Object(fields) => fields,
        Value::Array(_) => &empty, // {} from Lua: an enabled action without extras
        other => return Err(format!("action {name} is {other}, not a table")),
    };
    let disabled = fields
        .get("disabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let text = |key: &str| {
        fields
            .get(key)
            .map_or_else(|| json!("").to_string(), |v| v.to_string())
    };
    Ok((
        name.to_string(),
        disabled,
        text("iconClass"),
        text("displayName"),
    ))
}

/// The script offers exactly the fixture's actions, with the fixture's settings.
fn check_discovery(lua: &Lua, script: &str, obj: &Value, want: &Value) -> Result<(), String> {
    let got = match lua.run(script, obj)? {
        Outcome::Returned(Value::Object(actions)) => actions,
        other => return Err(format!("{other}, not a table of actions")),
    };
    let mut got = got
        .iter()
        .map(|(name, action)| offered(name, action))
        .collect::<Result<Vec<_>, _>>()?;
    let mut want = want
        .as_array()
        .ok_or("the fixture has no `result` list")?
        .iter()
        .map(|action| match action.get("name").and_then(Value::as_str) {
            Some(name) => offered(name, action),
            None => Err(format!("fixture result {action} has no name")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    got.sort();
    want.sort();
    if got == want {
        Ok(())
    } else {
        Err(format!("\n   got  {got:?}\n   want {want:?}"))
    }
}

// ---------------------------------------------------------------------------------------
// Actions: `actionTests` in `actions/action_test.yaml`.

/// What an action test expects: an error message, or the output (operations, or an object).
enum Want {
    Error(Value),
    Output(Value),
}

fn action_want(dir: &Path, test: &Value) -> Result<Want, String> {
    if let Some(message) = test.get("expectedErrorMessage") {
        return Ok(Want::Error(message.clone()));
    }
    let path = test
        .get("expectedOutputPath")
        .and_then(Value::as_str)
        .ok_or("neither expectedErrorMessage nor expectedOutputPath")?;
    load_yaml(&dir.join(path)).map(Want::Output)
}

fn check_action_file(lua: &Lua, dir: &Path, report: &mut Report) {
    let test_file = dir.join("action_test.yaml");
    let doc = match load_yaml(&test_file) {
        Ok(doc) => doc,
        Err(why) => return report.record(shown(&test_file), Err(why)),
    };
    for test in list(&doc, "actionTests") {
        let action = test
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("<no action>");
        let fixture = format!(
            "{} {action} (inputPath {})",
            shown(&test_file),
            input_path(test)
        );
        let result = load_input(dir, test).and_then(|obj| {
            let script = read_text(&dir.join(action).join("action.lua"))?;
            check_action(lua, &script, &obj, &action_want(dir, test)?)
        });
        report.record(fixture, result);
    }
}

fn check_action(lua: &Lua, script: &str, obj: &Value, want: &Want) -> Result<(), String> {
    match (want, lua.run(script, obj)?) {
        (Want::Error(message), Outcome::Raised(got)) if message.as_str() == Some(got.as_str()) => {
            Ok(())
        }
        (Want::Error(message), got) => Err(format!("{got}, want the error {message}")),
        (Want::Output(expected), Outcome::Returned(got)) => {
            let problems = compare_output(expected, &got);
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        }
        (Want::Output(_), failed) => Err(failed.to_string()),
    }
}

/// A list of `{k8sOperation, unstructuredObj}` against the script's `{operation, resource}`
/// list, in order; anything else is a patched object, compared whole.
fn compare_output(expected: &Value, got: &Value) -> Vec<String> {
    let Value::Array(expected) = expected else {
        return differs("patched object", got, expected);
    };
    let got = match got {
        Value::Array(got) if got.len() == expected.len() => got,
        _ => {
            return vec![format!(
                "want a list of {} operations, got {got}",
                expected.len()
            )];
        }
    };
    let mut problems = Vec::new();
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        problems.extend(
            compare_operation(e, g)
                .into_iter()
                .map(|p| format!("[{i}] {p}")),
        );
    }
    problems
}

fn differs(what: &str, got: &Value, want: &Value) -> Vec<String> {
    if got == want {
        Vec::new()
    } else {
        vec![format!("{what} differs: got {got}, want {want}")]
    }
}

fn compare_operation(expected: &Value, got: &Value) -> Vec<String> {
    let keys: BTreeSet<&str> = got
        .as_object()
        .map(|fields| fields.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if keys != BTreeSet::from(["operation", "resource"]) {
        return vec![format!("must be {{operation, resource}}, got {got}")];
    }
    let (operation, resource) = (&got["operation"], &got["resource"]);
    let want_operation = field(expected, "k8sOperation");
    let want_resource = field(expected, "unstructuredObj");
    if operation != want_operation {
        vec![format!("operation {operation}, want {want_operation}")]
    } else if operation.as_str() == Some("create") {
        compare_created(want_resource, resource)
    } else {
        differs("patched object", resource, want_resource)
    }
}

/// A created object: apiVersion, kind and spec equal; metadata equal except the name; the
/// name is the expected name's prefix (up to its 14 trailing digits) and a UTC
/// `YYYYmmddHHMMSS` stamp within two minutes of now; no top-level field the fixture lacks.
fn compare_created(expected: &Value, got: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for key in ["apiVersion", "kind", "spec"] {
        let (e, g) = (field(expected, key), field(got, key));
        if e != g {
            problems.push(format!("{key}: got {g}, want {e}"));
        }
    }
    let mut want_meta = object_fields(expected.get("metadata"));
    let mut got_meta = object_fields(got.get("metadata"));
    let want_name = want_meta.remove("name").unwrap_or_else(|| json!(""));
    let got_name = got_meta.remove("name").unwrap_or_else(|| json!(""));
    if want_meta != got_meta {
        let (g, e) = (Value::Object(got_meta), Value::Object(want_meta));
        problems.push(format!("metadata (name aside): got {g}, want {e}"));
    }
    problems.extend(name_problem(&want_name, &got_name));
    let mut allowed: BTreeSet<&str> = BTreeSet::from(["apiVersion", "kind", "metadata", "spec"]);
    allowed.extend(object_fields_keys(expected));
    let extra: BTreeSet<&str> = object_fields_keys(got)
        .filter(|key| !allowed.contains(key))
        .collect();
    if !extra.is_empty() {
        problems.push(format!("unexpected top-level fields {extra:?}"));
    }
    problems
}

/// An object's fields; anything else (an empty Lua table is `[]`) as no fields.
fn object_fields(value: Option<&Value>) -> Map<String, Value> {
    value
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn object_fields_keys(value: &Value) -> impl Iterator<Item = &str> {
    value
        .as_object()
        .into_iter()
        .flat_map(|fields| fields.keys().map(String::as_str))
}

fn name_problem(want: &Value, got: &Value) -> Option<String> {
    let (want_split, got_split) = (
        want.as_str().and_then(split_stamp),
        got.as_str().and_then(split_stamp),
    );
    match (want_split, got_split) {
        (Some((want_prefix, _)), Some((got_prefix, stamp))) if want_prefix == got_prefix => {
            stamp_is_now(stamp).err()
        }
        _ => Some(format!(
            "name: got {got}, want {want} with its digits a time stamp"
        )),
    }
}

/// `promote-checkout-prod-20260310142002` as (`promote-checkout-prod-`, `20260310142002`).
fn split_stamp(name: &str) -> Option<(&str, &str)> {
    let cut = name.len().checked_sub(STAMP_DIGITS)?;
    let (prefix, stamp) = (name.get(..cut)?, name.get(cut..)?);
    let shaped = prefix.ends_with('-')
        && !prefix.contains('\n')
        && stamp.bytes().all(|b| b.is_ascii_digit());
    shaped.then_some((prefix, stamp))
}

fn stamp_is_now(stamp: &str) -> Result<(), String> {
    let year: i16 = stamp[..4].parse().expect("split_stamp checked the digits");
    let two = |at: usize| -> i8 {
        stamp[at..at + 2]
            .parse()
            .expect("split_stamp checked the digits")
    };
    let when = jiff::civil::DateTime::new(year, two(4), two(6), two(8), two(10), two(12), 0)
        .and_then(|civil| jiff::tz::TimeZone::UTC.to_timestamp(civil))
        .map_err(|e| format!("name stamp {stamp} is not a time: {e}"))?;
    let off = jiff::Timestamp::now().duration_since(when).abs();
    if off > STAMP_TOLERANCE {
        Err(format!(
            "name stamp {stamp} is not UTC now (off by {off:#})"
        ))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn every_argocd_health_check_gives_the_status_its_fixture_expects() {
    let lua = Lua::installed();
    let mut report = Report::default();
    for dir in health_dirs() {
        check_health_file(&lua, &dir, &mut report);
    }
    report.assert_all_passed("health");
}

#[test]
fn every_argocd_action_discovery_offers_the_actions_its_fixture_expects() {
    let lua = Lua::installed();
    let mut report = Report::default();
    for dir in action_dirs() {
        check_discovery_file(&lua, &dir, &mut report);
    }
    report.assert_all_passed("action discovery");
}

#[test]
fn every_stage_action_creates_the_stage_command_its_fixture_expects() {
    let lua = Lua::installed();
    let mut report = Report::default();
    for dir in action_dirs() {
        check_action_file(&lua, &dir, &mut report);
    }
    report.assert_all_passed("action");
}

#[test]
fn a_script_gets_only_the_libraries_argocd_gives_it() {
    let lua = Lua::installed();
    let probe = r#"return {
        string = type(string), math = type(math), io = type(io), debug = type(debug),
        coroutine = type(coroutine), os_time = type(os.time), os_date = type(os.date),
        os_exit = type(os.exit), required_os_getenv = type(require("os").getenv),
        table_insert = type(table.insert),
        string_methods = pcall(function() return ("x"):upper() end),
    }"#;
    let Outcome::Returned(got) = lua.run(probe, &Value::Null).expect("lua5.1 runs") else {
        panic!("the probe script failed");
    };
    let want = json!({
        "string": "nil", "math": "nil", "io": "nil", "debug": "nil", "coroutine": "nil",
        "os_time": "function", "os_date": "function", "os_exit": "nil",
        "required_os_getenv": "nil", "table_insert": "function", "string_methods": false,
    });
    assert_eq!(got, want);
}

/// A command as the Stage actions create it, for `the_harness_reports_…`.
const PROMOTE_SCRIPT: &str = r#"
local os = require("os")
local name = obj.metadata.name
return {{ operation = "create", resource = {
  apiVersion = "greenlight.dev/v1alpha1", kind = "StageCommand",
  metadata = { name = "promote-" .. name .. "-" .. os.date("!%Y%m%d%H%M%S"), namespace = "checkout" },
  spec = { stage = name, action = "promote" },
} }}
"#;

#[test]
fn the_harness_reports_every_fixture_whose_expectation_is_wrong() {
    let lua = Lua::installed();
    let yaml = |text: &str| parse_yaml(text).expect("the test's YAML parses");
    let obj = yaml("metadata: {name: checkout-prod, namespace: checkout}");
    let health =
        r#"return { status = "Progressing", message = "waiting for " .. obj.metadata.name }"#;
    let right_health = yaml("{status: Progressing, message: waiting for checkout-prod}");
    let wrong_health = yaml("{status: Healthy, message: waiting for checkout-prod}");
    let discovery = r#"return { promote = { disabled = true }, abort = {} }"#;
    let wrong_discovery = yaml("[{name: promote, disabled: false}, {name: abort}]");
    let command = |action: &str| {
        yaml(&format!(
            "- k8sOperation: create\n  unstructuredObj:\n    apiVersion: greenlight.dev/v1alpha1\n    \
             kind: StageCommand\n    metadata: {{name: promote-checkout-prod-00000000000000, \
             namespace: checkout}}\n    spec: {{stage: checkout-prod, action: {action}}}\n"
        ))
    };
    let stale = PROMOTE_SCRIPT.replace(r#"os.date("!%Y%m%d%H%M%S")"#, r#""20000101000000""#);

    let mut report = Report::default();
    let right = check_health(&lua, health, &obj, &right_health);
    assert_eq!(right, Ok(()), "the harness passes a right expectation");
    let right = check_action(
        &lua,
        PROMOTE_SCRIPT,
        &obj,
        &Want::Output(command("promote")),
    );
    assert_eq!(right, Ok(()), "the harness passes a right command");
    report.record(
        "health".into(),
        check_health(&lua, health, &obj, &wrong_health),
    );
    report.record(
        "discovery".into(),
        check_discovery(&lua, discovery, &obj, &wrong_discovery),
    );
    let wrong_command = Want::Output(command("abort"));
    report.record(
        "spec".into(),
        check_action(&lua, PROMOTE_SCRIPT, &obj, &wrong_command),
    );
    let promote = Want::Output(command("promote"));
    report.record("stamp".into(), check_action(&lua, &stale, &obj, &promote));
    let error = Want::Error(json!("no rolled-back release"));
    report.record(
        "error".into(),
        check_action(&lua, PROMOTE_SCRIPT, &obj, &error),
    );

    let failures = report.failures.join("\n");
    assert_eq!(
        report.failures.len(),
        5,
        "every wrong expectation fails:\n{failures}"
    );
    for expected in [
        r#"FAIL health: "#,
        r#""status":"Healthy""#,
        r#"FAIL discovery: "#,
        r#"spec: got {"action":"promote","stage":"checkout-prod"}, want {"#,
        r#""action":"abort""#,
        "name stamp 20000101000000 is not UTC now",
        r#"want the error "no rolled-back release""#,
    ] {
        assert!(
            failures.contains(expected),
            "{expected:?} missing from:\n{failures}"
        );
    }
}
