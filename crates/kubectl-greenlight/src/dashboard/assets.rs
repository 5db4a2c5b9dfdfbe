//! The page: HTML, script, styles and the vendored chart library, embedded in the binary so
//! the plugin stays one file. The HTML carries the session's CSRF token; nothing else is
//! filled in on the server.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

static ASSETS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/assets");

/// The page, with its token.
pub fn index(csrf: &str) -> Response {
    let html = page(csrf);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn page(csrf: &str) -> String {
    ASSETS
        .get_file("index.html")
        .and_then(|f| f.contents_utf8())
        .unwrap_or_default()
        .replace("{{csrf}}", csrf)
}

/// One embedded file, by path under `assets/`.
pub async fn file(Path(path): Path<String>) -> Response {
    // The page itself only with its token, from `/`.
    let page = path.trim_matches('/').ends_with(".html");
    match ASSETS.get_file(path.trim_matches('/')) {
        Some(f) if !page => {
            ([(header::CONTENT_TYPE, content_type(&path))], f.contents()).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("txt") | Some("LICENSE") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page turns nothing from the cluster into markup: it builds elements and sets
    /// their text, and never parses a string as HTML or script.
    #[test]
    fn the_page_never_parses_text_as_html_or_script() {
        let script = ASSETS.get_file("app.js").unwrap().contents_utf8().unwrap();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout(\"",
            "srcdoc",
        ] {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
        let html = ASSETS
            .get_file("index.html")
            .unwrap()
            .contents_utf8()
            .unwrap();
        assert!(
            !html.contains("<script>"),
            "no inline script: the CSP forbids it"
        );
        let handlers = html
            .split_whitespace()
            .filter(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(handlers.count(), 0, "no inline handlers");
    }

    #[test]
    fn the_chart_library_ships_with_its_licence() {
        let licence = ASSETS.get_file("vendor/uplot/LICENSE.txt").unwrap();
        assert!(licence.contents_utf8().unwrap().contains("MIT License"));
    }

    #[test]
    fn the_page_carries_its_token_and_nothing_else_is_filled_in() {
        let html = page("abc123");
        assert!(html.contains(r#"<meta name="csrf-token" content="abc123">"#));
        assert!(!html.contains("{{"), "no placeholder left");
    }
}
