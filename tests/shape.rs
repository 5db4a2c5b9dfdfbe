//! The shape the code keeps: no function over 80 lines, and no import circle between the
//! modules of any crate (siblings at any level; a module and its own parent or child do not
//! count). Both fail with what to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LONGEST_FUNCTION: usize = 80;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every function's name and length in lines, from its `fn` line to its closing brace.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let fn_line =
        regex::Regex::new(r"^(\s*)(pub(\([^)]*\))? )?(const )?(async )?(unsafe )?fn (\w+)")
            .expect("constant pattern");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(c) = fn_line.captures(line) else {
            continue;
        };
        let indent = &c[1];
        if line.trim_end().ends_with(';') || line.trim_end().ends_with('}') {
            continue;
        }
        let close = format!("{indent}}}");
        let end = (i..lines.len())
            .find(|&j| lines[j].trim_end() == close)
            .unwrap_or(i);
        out.push((c[7].to_string(), end - i + 1));
    }
    out
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    let dirs = ["crates", "e2e", "benches", "tests"];
    for file in dirs.iter().flat_map(|dir| rust_files(&root.join(dir))) {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (name, lines) in function_lengths(&text) {
            if lines > LONGEST_FUNCTION {
                long.push(format!("{}: {name} has {lines} lines", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these functions:\n{}",
        long.join("\n")
    );
}

/// Module path (`controller::stage`) of each file under `src/`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    rust_files(src)
        .into_iter()
        .map(|file| {
            let rel = file
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts
                .last()
                .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
            {
                parts.pop();
            }
            (parts.join("::"), file)
        })
        .collect()
}

/// Edges between sibling modules: `a::b` naming `a::c::x` is an edge `a::b -> a::c`.
fn sibling_edges(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let path = regex::Regex::new(r"\b((?:crate|super)(?:::\w+)+)").expect("constant pattern");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in modules {
        let me: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let text = std::fs::read_to_string(file).expect("readable source");
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        for m in path.find_iter(&code) {
            let target = resolve(&me, m.as_str(), modules);
            if let Some((from, to)) = target.and_then(|t| sibling_pair(&me, &t)) {
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    edges
}

/// The longest module a path names, absolute.
fn resolve(me: &[&str], path: &str, modules: &BTreeMap<String, PathBuf>) -> Option<Vec<String>> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if parts[0] == "crate" {
        parts.remove(0);
        vec![]
    } else {
        me.to_vec()
    };
    while parts.first() == Some(&"super") {
        parts.remove(0);
        base.pop();
    }
    let full: Vec<String> = base
        .iter()
        .chain(parts.iter())
        .map(|s| s.to_string())
        .collect();
    (1..=full.len())
        .rev()
        .map(|k| full[..k].to_vec())
        .find(|p| modules.contains_key(&p.join("::")))
}

/// The two siblings under the common ancestor, unless one module contains the other.
fn sibling_pair(me: &[&str], target: &[String]) -> Option<(String, String)> {
    let common = me
        .iter()
        .zip(target)
        .take_while(|(a, b)| **a == b.as_str())
        .count();
    if common == me.len() || common == target.len() {
        return None;
    }
    let from = me[..=common].join("::");
    let to = target[..=common].join("::");
    Some((from, to))
}

/// A cycle through `start`, if there is one.
fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

/// The `src/` of every crate in `crates/`.
fn crate_sources() -> Vec<PathBuf> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("crates/")
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    out.sort();
    out
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut cycles = Vec::new();
    let mut scanned = 0;
    for src in crate_sources() {
        let edges = sibling_edges(&modules(&src));
        let found = edges.values().map(BTreeSet::len).sum::<usize>();
        assert!(
            found > 0,
            "the import scan found no edge in {}",
            src.display()
        );
        scanned += found;
        cycles.extend(
            edges
                .keys()
                .filter_map(|m| cycle_from(m, &edges))
                .map(|c| format!("{}: {}", src.display(), c.join(" -> "))),
        );
    }
    assert!(
        scanned > 20,
        "the import scan found too few edges to be working: {scanned}"
    );
    assert!(cycles.is_empty(), "import circles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checks_see_a_long_function_and_a_circle() {
    let long = format!("fn long() {{\n{}}}\n", "    let x = 1;\n".repeat(85));
    assert_eq!(function_lengths(&long), vec![("long".to_string(), 87)]);
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(
        cycle_from("a", &edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
