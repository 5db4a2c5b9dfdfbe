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
    let html = ASSETS
        .get_file("index.html")
        .and_then(|f| f.contents_utf8())
        .unwrap_or_default()
        .replace("{{csrf}}", csrf);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// One embedded file, by path under `assets/`.
pub async fn file(Path(path): Path<String>) -> Response {
    match ASSETS.get_file(&path) {
        Some(f) if path != "index.html" => {
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
