//! The book in `docs/` (mdBook). This test owns its generated pages, the CRD reference under
//! `docs/src/reference/crds*` (rendered from `crds/greenlight.yaml`; `make docs` writes them
//! again), and holds the rest of the book to the code: every internal link resolves, every
//! page is in `SUMMARY.md`, and the flags, metrics and Event reasons the operator has are all
//! in their reference pages. Each failure says what to fix.

#[path = "book/crds.rs"]
mod crds;
#[path = "book/flags.rs"]
mod flags;
#[path = "book/links.rs"]
mod links;
#[path = "book/names.rs"]
mod names;

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn book() -> PathBuf {
    root().join("docs/src")
}

fn page(path: &str) -> String {
    std::fs::read_to_string(book().join(path)).unwrap_or_else(|e| panic!("docs/src/{path}: {e}"))
}

/// With `GREENLIGHT_BLESS=1` the generated pages are written instead of compared.
fn blessing() -> bool {
    std::env::var("GREENLIGHT_BLESS").is_ok_and(|v| v == "1")
}

#[test]
fn the_crd_reference_is_generated_from_the_schema_and_is_current() {
    let yaml = std::fs::read_to_string(root().join("crds/greenlight.yaml")).expect("the CRDs");
    let mut stale = Vec::new();
    for crds::Page { path, text } in crds::pages(&yaml) {
        let file = book().join(&path);
        if blessing() {
            std::fs::create_dir_all(file.parent().expect("a directory")).expect("mkdir");
            std::fs::write(&file, &text).expect("write the page");
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            stale.push(format!("docs/src/{path}"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale against crds/greenlight.yaml: {}; run `make docs` (or GREENLIGHT_BLESS=1 cargo test --test book) and commit them",
        stale.join(", ")
    );
}

#[test]
fn every_internal_link_of_the_book_and_the_readme_leads_to_a_page_and_a_heading() {
    let mut files = links::markdown_files(&book());
    files.push(root().join("README.md"));
    let broken: Vec<String> = files
        .iter()
        .flat_map(|file| links::broken_links(file, root()))
        .collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_is_reachable_from_the_summary_and_every_summary_entry_exists() {
    let entries = links::summary_entries(&page("SUMMARY.md"));
    let missing: Vec<&String> = entries
        .iter()
        .filter(|e| !book().join(e).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "SUMMARY.md lists pages that do not exist: {missing:?}"
    );
    let unlisted: Vec<String> = links::markdown_files(&book())
        .iter()
        .map(|f| {
            f.strip_prefix(book())
                .expect("under docs/src")
                .display()
                .to_string()
        })
        .filter(|f| f != "SUMMARY.md" && !entries.contains(f))
        .collect();
    assert!(
        unlisted.is_empty(),
        "pages missing from docs/src/SUMMARY.md: {unlisted:?}"
    );
}

#[test]
fn every_flag_the_binaries_print_is_in_the_flags_reference_under_its_command() {
    let reference = page("reference/flags.md");
    let mut missing = Vec::new();
    for (bin, shown_as) in [
        ("greenlight", "greenlight"),
        ("kubectl-greenlight", "kubectl greenlight"),
    ] {
        for command in flags::every_command(&flags::binary(bin), shown_as) {
            let words: Vec<&str> = command.command.split(' ').collect();
            // A flag of a command counts where the command or one that contains it lists it.
            let sections: Vec<&str> = (1..=words.len())
                .filter_map(|n| flags::section_of(&reference, &words[..n].join(" ")))
                .collect();
            if flags::section_of(&reference, &command.command).is_none() {
                missing.push(format!("a section headed `{}`", command.command));
            }
            for flag in &command.flags {
                if !sections.iter().any(|s| flags::names_flag(s, flag)) {
                    missing.push(format!("{} --{flag}", command.command));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/src/reference/flags.md lacks:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_metric_the_operator_serves_is_in_the_metrics_reference_with_its_help() {
    let reference = page("reference/metrics.md");
    let registered = names::metrics();
    let missing: Vec<String> = registered
        .iter()
        .filter(|(name, help)| {
            let row = reference.lines().find(|l| {
                l.starts_with(&format!("| `greenlight_{name}`"))
                    || l.starts_with(&format!("| `greenlight_{name}_total`"))
            });
            !row.is_some_and(|r| r.contains(help.as_str()))
        })
        .map(|(name, help)| format!("greenlight_{name}: {help}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/src/reference/metrics.md needs a row for each, with its help text:\n{}",
        missing.join("\n")
    );
}

/// What the operator's `/metrics` serves with no object watched: every family it names must
/// be one the source scan found, so the scan cannot miss a way of registering.
#[tokio::test]
async fn the_metrics_the_operator_encodes_are_the_ones_its_sources_register() {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client that is never used");
    let key = std::sync::Arc::new(greenlight::identity::IdentityKey::from_bytes(&[7; 32]));
    let (index, _tasks) = greenlight::index::Index::watch(&client, &None, key);
    let window = jiff::SignedDuration::from_hours(24 * 90);
    let metrics = greenlight::metrics::Metrics::new();
    metrics.collect_state(Box::new(
        greenlight::insight::collector::StateCollector::new(index, window),
    ));
    let scanned: Vec<String> = names::metrics().into_iter().map(|(n, _)| n).collect();
    let served: Vec<String> = metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP greenlight_"))
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect();
    assert!(served.len() > 10, "the state series are served: {served:?}");
    let unscanned: Vec<&String> = served.iter().filter(|n| !scanned.contains(n)).collect();
    assert!(
        unscanned.is_empty(),
        "served but not found in the sources: {unscanned:?}"
    );
}

#[test]
fn every_event_reason_the_operator_publishes_is_in_the_events_reference() {
    let reference = page("reference/events.md");
    let reasons = names::event_reasons();
    assert!(reasons.contains("RolloutStarted") && reasons.contains("WriteRefused"));
    let missing: Vec<&String> = reasons
        .iter()
        .filter(|r| {
            !reference
                .lines()
                .any(|l| l.starts_with(&format!("| `{r}`")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/src/reference/events.md needs a row for each: {missing:?}"
    );
}
