//! Links between the book's pages and from the README: each relative link names a file that
//! exists, and each `#anchor` a heading of the page it points into, by mdBook's rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every Markdown file under `dir`, sorted.
pub fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The text outside fenced code blocks, line by line (inside ones are left empty).
fn prose(text: &str) -> Vec<String> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return String::new();
            }
            if fenced {
                String::new()
            } else {
                without_code_spans(line)
            }
        })
        .collect()
}

fn without_code_spans(line: &str) -> String {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join("")
}

/// The anchors mdBook gives the page's headings: the heading's text, lowercased, with
/// alphanumerics, `-` and `_` kept, spaces made `-` and the rest dropped; a repeat gets `-1`,
/// `-2`...
pub fn anchors(text: &str) -> Vec<String> {
    let link = regex::Regex::new(r"\[([^\]]*)\]\([^)]*\)").expect("constant pattern");
    let heading_line = regex::Regex::new(r"^#{1,6}\s+(.*)$").expect("constant pattern");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = heading_line.captures(line).filter(|_| !fenced) else {
            continue;
        };
        let heading = link.replace_all(heading[1].trim(), "$1");
        let id: String = heading
            .chars()
            .filter_map(|c| match c {
                c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c.to_ascii_lowercase()),
                c if c.is_whitespace() => Some('-'),
                _ => None,
            })
            .collect();
        let n = seen.entry(id.clone()).or_insert(0);
        out.push(if *n == 0 {
            id.clone()
        } else {
            format!("{id}-{n}")
        });
        *n += 1;
    }
    out
}

/// Each broken link of `file`, as `file:line: target (why)`.
pub fn broken_links(file: &Path, root: &Path) -> Vec<String> {
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("constant pattern");
    let text = std::fs::read_to_string(file).expect("a readable page");
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut broken = Vec::new();
    for (n, line) in prose(&text).iter().enumerate() {
        for target in link.captures_iter(line).map(|c| c[1].to_string()) {
            if let Some(why) = why_broken(file, &target) {
                broken.push(format!("{name}:{}: {target} ({why})", n + 1));
            }
        }
    }
    broken
}

fn why_broken(file: &Path, target: &str) -> Option<String> {
    if target.starts_with("http://")
        || target.starts_with("https://")
        || target.starts_with("mailto:")
    {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let linked = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent().expect("a directory").join(path)
    };
    if !linked.exists() {
        return Some("no such file".into());
    }
    let is_page = linked.extension().is_some_and(|e| e == "md");
    if anchor.is_empty() || !is_page {
        return None;
    }
    let page = std::fs::read_to_string(&linked).expect("a readable page");
    let found = anchors(&page).iter().any(|a| a == anchor);
    (!found).then(|| "no heading has this anchor".into())
}

/// The pages `SUMMARY.md` links to, relative to `docs/src`.
pub fn summary_entries(summary: &str) -> Vec<String> {
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("constant pattern");
    prose(summary)
        .iter()
        .flat_map(|line| {
            link.captures_iter(line)
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}
