//! What stands between a browser and the user's rights: requests must name a host the
//! dashboard serves (so a page elsewhere cannot reach it by rebinding a DNS name to
//! loopback), actions must carry the page's CSRF token and come from the page's own origin,
//! and every response forbids framing, sniffing and any script but the dashboard's own.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::{App, Mode};

/// The header an action carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-greenlight-csrf";

/// Scripts, styles, data and images from the dashboard alone: no inline script, no eval, no
/// other origin, no framing, no form posted anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// A fresh random token: 32 bytes from the system's generator, as hex.
pub fn token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The names a browser on this machine reaches `address` by.
pub fn loopback_hosts(address: SocketAddr) -> Vec<String> {
    let port = address.port();
    let mut hosts = vec![
        address.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    hosts.dedup();
    hosts
}

/// Refuses a request for a host the dashboard does not serve, or sent by another site's
/// page, and adds the safety headers to every response.
pub async fn protect(State(app): State<App>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let path = request.uri().path();
    // The kubelet's probes name the pod's own address.
    let probe = path == "/healthz";
    let from_elsewhere = sent_by_another_site(&request);
    let mut response = if !probe && !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        (StatusCode::MISDIRECTED_REQUEST, "unknown host\n").into_response()
    } else if from_elsewhere {
        (StatusCode::FORBIDDEN, "not from another site\n").into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A fetch or a post another site's page had the browser send (`Sec-Fetch-Site`). Another
/// site may link here (a chat message, the issuer's redirect back after its login page): a
/// top-level navigation is followed, and so is anything under `/auth/`.
fn sent_by_another_site(request: &Request) -> bool {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let navigation =
        request.method() == axum::http::Method::GET && header("sec-fetch-mode") == Some("navigate");
    matches!(header("sec-fetch-site"), Some("cross-site" | "same-site"))
        && !navigation
        && !request.uri().path().starts_with("/auth/")
}

/// The local dashboard's cookie, named by port: cookies do not tell ports apart, and two
/// dashboards of two people may run on one machine.
pub fn local_cookie(port: u16) -> String {
    format!("greenlight_local_{port}")
}

/// The local dashboard serves only whoever opens the address it printed: its `?key=` is
/// swapped for a cookie, which every later request must carry. Another user of the machine
/// reaches the port, but not the key.
pub async fn admit(State(app): State<App>, request: Request, next: Next) -> Response {
    let (Mode::Local(_), Some(key)) = (&app.mode, app.key.as_deref()) else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/healthz" || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    let name = local_cookie(app.port);
    if let Some(offered) = query_value(request.uri().query(), "key") {
        if !same(offered.as_bytes(), key.as_bytes()) {
            return (
                StatusCode::FORBIDDEN,
                "wrong key: open the address the dashboard printed\n",
            )
                .into_response();
        }
        let cookie = format!("{name}={key}; Path=/; HttpOnly; SameSite=Strict");
        return ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response();
    }
    let carried = cookie_value(request.headers(), &name);
    if carried.is_some_and(|c| same(c.as_bytes(), key.as_bytes())) {
        return next.run(request).await;
    }
    let why = "this dashboard serves whoever started it: open the address `kubectl greenlight dashboard` printed (it carries a key)\n";
    (StatusCode::UNAUTHORIZED, why).into_response()
}

/// One parameter of a query string, as sent (keys are hex, so nothing needs decoding).
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// One cookie's value.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Why an action is refused before it reaches the cluster: a missing or wrong CSRF token,
/// or an origin other than the page's own.
pub fn refuse_action(headers: &HeaderMap, csrf: &str, hosts: &[String]) -> Option<Response> {
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !same(sent.as_bytes(), csrf.as_bytes()) {
        return Some(forbidden("missing or wrong CSRF token: reload the page"));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let own = |o: &str| {
        hosts.iter().any(|h| {
            o.eq_ignore_ascii_case(&format!("http://{h}"))
                || o.eq_ignore_ascii_case(&format!("https://{h}"))
        })
    };
    match origin {
        Some(o) if !own(o) => Some(forbidden("an action from another origin")),
        _ => None,
    }
}

/// Equal bytes, compared in a time that does not tell where they first differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn forbidden(why: &str) -> Response {
    let body = serde_json::json!({ "error": why }).to_string();
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn an_action_needs_the_pages_token_and_its_own_origin() {
        let hosts = loopback_hosts("127.0.0.1:3100".parse().unwrap());
        let token = token();
        let refused = |pairs: &[(&'static str, &str)]| {
            refuse_action(&headers(pairs), &token, &hosts).is_some()
        };
        assert!(refused(&[]), "no token");
        assert!(refused(&[(CSRF_HEADER, "0000")]), "a wrong token");
        let other = token.replace(&token[..1], if &token[..1] == "a" { "b" } else { "a" });
        assert!(refused(&[(CSRF_HEADER, &other)]), "a token one digit off");
        assert!(refused(&[
            (CSRF_HEADER, &token),
            ("origin", "http://evil.example")
        ]));
        assert!(!refused(&[(CSRF_HEADER, &token)]), "the page's token");
        assert!(!refused(&[
            (CSRF_HEADER, &token),
            ("origin", "http://localhost:3100")
        ]));
    }

    fn request(method: &str, path: &str, pairs: &[(&'static str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in pairs {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn another_sites_fetch_is_refused_and_its_link_is_followed() {
        let fetch = [("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")];
        assert!(sent_by_another_site(&request(
            "GET",
            "/api/releases/v1",
            &fetch
        )));
        assert!(sent_by_another_site(&request(
            "POST",
            "/api/approvals",
            &[("sec-fetch-site", "same-site")]
        )));
        let link = [
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ];
        assert!(
            !sent_by_another_site(&request("GET", "/", &link)),
            "a link to the page"
        );
        assert!(
            sent_by_another_site(&request("POST", "/", &link)),
            "a form posted from elsewhere"
        );
        assert!(!sent_by_another_site(&request(
            "GET",
            "/auth/callback",
            &fetch[..1]
        )));
        assert!(!sent_by_another_site(&request(
            "GET",
            "/api/pipelines",
            &[("sec-fetch-site", "same-origin")]
        )));
        assert!(
            !sent_by_another_site(&request("GET", "/api/pipelines", &[])),
            "not a browser"
        );
    }

    #[test]
    fn the_key_and_cookies_are_read_exactly() {
        assert_eq!(query_value(Some("key=abc"), "key"), Some("abc"));
        assert_eq!(query_value(Some("keyx=abc&key=def"), "key"), Some("def"));
        assert_eq!(query_value(Some("x=1"), "key"), None);
        let h = headers(&[(
            "cookie",
            "a=1; greenlight_local_3100=k; greenlight_local_31000=z",
        )]);
        assert_eq!(cookie_value(&h, &local_cookie(3100)), Some("k"));
        assert_eq!(cookie_value(&h, &local_cookie(3101)), None);
    }

    #[test]
    fn each_start_makes_a_new_token_of_32_random_bytes() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
