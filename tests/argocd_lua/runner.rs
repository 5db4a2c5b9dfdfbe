//! Running an Argo CD Lua script under the real `lua5.1`, in the sandbox `harness.lua`
//! shapes like Argo CD's: shared by tests/argocd_lua.rs (the fixtures) and the e2e cases
//! (live objects).

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The sandbox, the JSON encoder and `run(src)`.
const PRELUDE: &str = include_str!("harness.lua");
const LUA_TIMEOUT: Duration = Duration::from_secs(10);

/// The `lua5.1` binary (or `$LUA`), known to start.
pub struct Lua {
    binary: String,
}

/// What a script did: returned a value (as JSON), raised an error, or did not compile.
pub enum Outcome {
    Returned(Value),
    Raised(String),
    DoesNotCompile(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Returned(value) => write!(f, "the script returned {value}"),
            Outcome::Raised(message) => write!(f, "the script raised {message:?}"),
            Outcome::DoesNotCompile(message) => write!(f, "the script does not compile: {message}"),
        }
    }
}

impl Lua {
    pub fn installed() -> Lua {
        let binary = std::env::var("LUA").unwrap_or_else(|_| "lua5.1".to_string());
        let probe = Command::new(&binary)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            probe.as_ref().is_ok_and(ExitStatus::success),
            "cannot run `{binary}` ({probe:?}). These tests run the Argo CD Lua scripts under \
             the real Lua 5.1 interpreter: `make test` installs it (hack/install-deps.sh; \
             Debian package lua5.1)"
        );
        Lua { binary }
    }

    /// Runs `script` with the global `obj` set to `obj`. An `Err` is lua5.1 itself failing
    /// (crash, timeout, output that is not the prelude's), which fails the fixture too.
    pub fn run(&self, script: &str, obj: &Value) -> Result<Outcome, String> {
        let program = format!(
            "{PRELUDE}\nobj = {}\nrun({})\n",
            lua_literal(obj),
            long_bracket(script)
        );
        let stdout = self.execute(&program)?;
        let text = String::from_utf8(stdout).map_err(|e| format!("lua printed non-UTF-8: {e}"))?;
        let (kind, payload) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        match kind {
            "OK" => serde_json::from_str(payload)
                .map(|value| Outcome::Returned(normalize(value)))
                .map_err(|e| format!("lua printed invalid JSON ({e}): {payload}")),
            "ERROR" => Ok(Outcome::Raised(payload.to_string())),
            "COMPILE" => Ok(Outcome::DoesNotCompile(payload.to_string())),
            _ => Err(format!("unexpected lua output: {text:?}")),
        }
    }

    /// Feeds `program` to `lua5.1 -` and returns its stdout; at most `LUA_TIMEOUT`.
    fn execute(&self, program: &str) -> Result<Vec<u8>, String> {
        let mut child = Command::new(&self.binary)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary))?;
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let written = stdin.write_all(program.as_bytes());
        drop(stdin);
        let status = wait_at_most(&mut child, LUA_TIMEOUT)?;
        let stdout = stdout.join().expect("the stdout reader does not panic");
        let stderr = stderr.join().expect("the stderr reader does not panic");
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            return Err(format!("{} failed ({status}): {stderr}", self.binary));
        }
        written.map_err(|e| format!("writing the program to {}: {e}", self.binary))?;
        Ok(stdout)
    }
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error leaves the output short, which then fails to parse.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn wait_at_most(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("lua ran for more than {timeout:?}"));
            }
            Err(e) => return Err(format!("waiting for lua: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Values between YAML, Lua and JSON.

/// A JSON value as a Lua constructor: maps keyed by string, lists 1-based, null absent.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:?}"),
            _ => n.to_string(),
        },
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// A Lua string literal: quote and backslash escaped, control and non-ASCII bytes as `\ddd`.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for byte in s.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0..=31 | 127..=255 => out.push_str(&format!("\\{byte:03}")),
            _ => out.push(char::from(byte)),
        }
    }
    out.push('"');
    out
}

/// `text` in a long bracket whose level it does not contain. The newline before the closing
/// bracket keeps a script ending in `]` or `]=` from closing it early.
fn long_bracket(text: &str) -> String {
    let mut level = 0;
    while text.contains(&format!("]{}]", "=".repeat(level))) {
        level += 1;
    }
    let eq = "=".repeat(level);
    format!("[{eq}[\n{text}\n]{eq}]")
}

/// Integral floats as integers, so `1.0` in a fixture equals the `1` Lua prints (numbers
/// compare by value, as they would in Python or Go).
pub fn normalize(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e18 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        other => other,
    }
}
