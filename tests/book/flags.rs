//! The flags the binaries print in their `--help`, command by command, for the flags
//! reference to be held to.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory the workspace's binaries are built in: beside this test's own (Cargo names
/// to a test only its own package's binaries; `make test` builds them all first).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.file_name().is_some_and(|d| d == "deps") {
        dir.pop();
    }
    dir
}

/// The binary, refused when it is missing or older than its crate's sources.
pub fn binary(name: &str) -> PathBuf {
    let bin = bin_dir().join(name);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "{} is not built: run `cargo build --workspace --bins` (make test and make docs do)",
            bin.display()
        );
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates")
        .join(name)
        .join("src");
    if let Some(newer) = newer_source(&src, built) {
        panic!(
            "{} is older than {}: run `cargo build --workspace --bins`",
            bin.display(),
            newer.display()
        );
    }
    bin
}

fn newer_source(dir: &Path, built: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = newer_source(&path, built) {
                return Some(found);
            }
        } else if entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| m > built)
        {
            return Some(path);
        }
    }
    None
}

/// One command and the long flags its help prints (without `--help` and `--version`).
pub struct Flags {
    /// As typed: `greenlight controller`, `kubectl greenlight get pipeline`.
    pub command: String,
    pub flags: Vec<String>,
}

/// Every command of the binary, the binary itself first, with their flags.
pub fn every_command(bin: &Path, shown_as: &str) -> Vec<Flags> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(args) = todo.pop() {
        let help = help(bin, &args);
        for sub in section(&help, "Commands:").filter(|s| *s != "help") {
            let mut deeper = args.clone();
            deeper.push(sub.to_string());
            todo.push(deeper);
        }
        let flags = section_flags(&help);
        let command = std::iter::once(shown_as.to_string())
            .chain(args)
            .collect::<Vec<_>>();
        out.push(Flags {
            command: command.join(" "),
            flags,
        });
    }
    out
}

fn help(bin: &Path, args: &[String]) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{} {args:?} --help: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?} --help failed",
        bin.display()
    );
    String::from_utf8(out.stdout).expect("help is text")
}

/// The first word of each line of a section of the help (`Commands:`).
fn section<'a>(help: &'a str, title: &str) -> impl Iterator<Item = &'a str> {
    help.lines()
        .skip_while(move |l| *l != title)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
}

fn section_flags(help: &str) -> Vec<String> {
    let flag = regex::Regex::new(r"--([a-z][a-z0-9-]*)").expect("constant pattern");
    let options = help.lines().skip_while(|l| *l != "Options:").skip(1);
    let mut flags: Vec<String> = options
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| flag.captures(l).map(|c| c[1].to_string()))
        .filter(|f| f != "help" && f != "version")
        .collect();
    flags.dedup();
    flags
}

/// The part of `page` under the heading that names `command` (in backticks), up to the next
/// heading of the same level or higher.
pub fn section_of<'a>(page: &'a str, command: &str) -> Option<&'a str> {
    let heading = format!("`{command}`");
    let start = page
        .lines()
        .position(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == heading)?;
    let lines: Vec<&str> = page.lines().collect();
    let level = lines[start].chars().take_while(|c| *c == '#').count();
    let end = (start + 1..lines.len())
        .find(|&i| {
            let n = lines[i].chars().take_while(|c| *c == '#').count();
            n > 0 && n <= level && lines[i].chars().nth(n) == Some(' ')
        })
        .unwrap_or(lines.len());
    let from = lines[..start].iter().map(|l| l.len() + 1).sum::<usize>();
    let to = lines[..end]
        .iter()
        .map(|l| l.len() + 1)
        .sum::<usize>()
        .min(page.len());
    Some(&page[from..to])
}

/// Whether `section` names `--flag` in a code span.
pub fn names_flag(section: &str, flag: &str) -> bool {
    let pattern = format!(r"`--{}([ =`\[<])", regex::escape(flag));
    regex::Regex::new(&pattern)
        .expect("an escaped pattern")
        .is_match(section)
}
