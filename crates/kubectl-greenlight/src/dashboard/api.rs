//! The dashboard's routes: the page, its data (read from the watched store, never from the
//! apiserver on a timer), a stream that says when the data changed, and the actions, each
//! made with the session's own client so RBAC decides as it would for kubectl.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::api::ListParams;
use serde::Deserialize;
use serde_json::json;

use super::{App, Mode, Session, guard, oidc, views};
use crate::PluginError;
use crate::act;
use crate::client::explain;
use greenlight_api::approval::Decision;
use greenlight_api::command::{CommandAction, StageCommandSpec};
use greenlight_api::notifier::{
    DELIVERED_ANNOTATION as DELIVERED, REPORTING_CONTROLLER as OPERATOR,
};

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(super::assets::file))
        .route("/api/session", get(session))
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{name}", get(pipeline))
        .route("/api/releases/{name}", get(release))
        .route("/api/stages/{name}/analysis", get(analysis))
        .route("/api/insight", get(insight))
        .route("/api/changes", get(changes))
        .route("/api/approvals", post(approve))
        .route("/api/commands", post(command))
        .route("/auth/login", get(sign_in))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(sign_out))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::from_fn_with_state(app.clone(), guard::admit))
        .layer(middleware::from_fn_with_state(app.clone(), guard::protect))
        .with_state(app)
}

/// The session a request acts in: the one local session, or the signed-in person's.
pub struct Caller(pub Arc<Session>);

impl FromRequestParts<App> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match &app.mode {
            Mode::Local(session) => Ok(Caller(session.clone())),
            Mode::Oidc(provider) => provider.session(&parts.headers).map(Caller).ok_or_else(|| {
                error(
                    StatusCode::UNAUTHORIZED,
                    "sign in first: /auth/login".into(),
                )
            }),
        }
    }
}

/// The page, with the session's token; to the issuer first when nobody is signed in.
async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    match &app.mode {
        Mode::Local(session) => super::assets::index(&session.csrf),
        Mode::Oidc(provider) => match provider.session(&headers) {
            Some(session) => super::assets::index(&session.csrf),
            None => Redirect::to("/auth/login").into_response(),
        },
    }
}

async fn sign_in(State(app): State<App>) -> Response {
    let Mode::Oidc(provider) = &app.mode else {
        return Redirect::to("/").into_response();
    };
    match provider.sign_in() {
        Ok((url, carried)) => {
            let cookie = format!(
                "{}={carried}; Path=/auth; HttpOnly; SameSite=Lax; Max-Age=600{}",
                oidc::sign_in_cookie(&carried),
                secure(provider)
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response()
        }
        Err(e) => failure(e),
    }
}

fn secure(provider: &oidc::Provider) -> &'static str {
    if provider.secure_cookie() {
        "; Secure"
    } else {
        ""
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The issuer's answer: a session and its cookie, then the page.
async fn callback(
    State(app): State<App>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Response {
    let Mode::Oidc(provider) = &app.mode else {
        return Redirect::to("/").into_response();
    };
    let (Some(code), Some(state)) = (answer.code, answer.state) else {
        let why = answer.error.unwrap_or_else(|| "no code".into());
        return error(
            StatusCode::BAD_REQUEST,
            format!("the issuer did not sign you in: {why}"),
        );
    };
    let name = oidc::sign_in_cookie(&state);
    let carried = guard::cookie_value(&headers, &name);
    match provider.callback(&code, &state, carried).await {
        Ok(id) => {
            let session = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Lax{}",
                oidc::COOKIE,
                secure(provider)
            );
            let done = format!("{name}=; Path=/auth; Max-Age=0");
            let mut response = Redirect::to("/").into_response();
            for cookie in [session, done] {
                if let Ok(value) = cookie.parse() {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(e) => failure(e),
    }
}

async fn sign_out(State(app): State<App>, Caller(s): Caller, headers: HeaderMap) -> Response {
    if let Some(refused) = guard::refuse_action(&headers, &s.csrf, &app.hosts) {
        return refused;
    }
    if let Mode::Oidc(provider) = &app.mode {
        provider.sign_out(&headers);
    }
    let cookie = format!("{}=; Path=/; Max-Age=0", oidc::COOKIE);
    (
        [(header::SET_COOKIE, cookie)],
        Json(json!({"signedOut": true})),
    )
        .into_response()
}

/// Who the page acts as, where, and what it could not watch.
async fn session(Caller(s): Caller) -> Response {
    s.store.ready(Duration::from_secs(5)).await;
    Json(json!({
        "namespace": s.ctx.ns,
        "user": s.user,
        "revision": s.store.revision(),
        "errors": s.store.errors(),
    }))
    .into_response()
}

async fn pipelines(Caller(s): Caller) -> Response {
    s.store.ready(Duration::from_secs(5)).await;
    Json(views::pipelines(&s.store.stages())).into_response()
}

async fn pipeline(Caller(s): Caller, Path(name): Path<String>) -> Response {
    let page = views::pipeline(&name, &s.ctx.ns, &s.store.stages(), &s.store.releases());
    match page {
        Some(page) => Json(page).into_response(),
        None => not_found("pipeline", &name),
    }
}

async fn release(Caller(s): Caller, Path(name): Path<String>) -> Response {
    let releases = s.store.releases();
    let Some(found) = releases
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&name))
    else {
        return not_found("release", &name);
    };
    let mut page = views::release(found);
    // Notices are Events, which the dashboard does not watch: read when the page is.
    match notices(&s.ctx, &name, found.metadata.uid.clone()).await {
        Ok(found) => page.notices = found,
        Err(e) => page.notices_error = Some(explain(e, "events", "", &s.ctx.ns).to_string()),
    }
    Json(page).into_response()
}

/// The notices the operator sent about a release: its Events that went to a Notifier.
async fn notices(
    ctx: &act::Ctx,
    release: &str,
    uid: Option<String>,
) -> Result<Vec<views::Notice>, kube::Error> {
    let api: kube::Api<KubeEvent> = kube::Api::namespaced(ctx.client.clone(), &ctx.ns);
    let selector = format!("involvedObject.kind=Release,involvedObject.name={release}");
    let events = api.list(&ListParams::default().fields(&selector)).await?;
    let notices = events.items.into_iter().filter_map(|e| {
        // The operator's own Events about this very Release (not one made again under its
        // name); their seal it alone can check.
        let ours = e.reporting_component.as_deref() == Some(OPERATOR)
            && e.involved_object.uid.is_some()
            && e.involved_object.uid == uid;
        if !ours {
            return None;
        }
        let delivered = e.metadata.annotations.as_ref()?.get(DELIVERED)?.clone();
        let time = e
            .last_timestamp
            .or(e.first_timestamp)
            .map(|t| t.0.to_string())
            // The operator writes events.k8s.io Events, whose time is `eventTime`.
            .or_else(|| e.event_time.map(|t| t.0.to_string()));
        Some(views::Notice {
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            time,
            delivered_to: delivered,
        })
    });
    Ok(notices.collect())
}

async fn analysis(Caller(s): Caller, Path(name): Path<String>) -> Response {
    let stages = s.store.stages();
    match stages
        .iter()
        .find(|st| st.metadata.name.as_deref() == Some(&name))
    {
        Some(stage) => Json(views::analysis(
            stage,
            &s.store.releases(),
            &s.store.gates(),
        ))
        .into_response(),
        None => not_found("stage", &name),
    }
}

#[derive(Deserialize)]
struct Weeks {
    weeks: Option<i64>,
}

async fn insight(Caller(s): Caller, Query(q): Query<Weeks>) -> Response {
    let store = &s.store;
    let weeks = q.weeks.unwrap_or(8).clamp(1, 26);
    let now = jiff::Timestamp::now();
    Json(views::insight(
        &store.stages(),
        &store.releases(),
        now,
        weeks,
    ))
    .into_response()
}

/// Server-sent events: `change` with the store's revision each time a watch saw a change,
/// at most five a second, so a burst of writes is one reload.
async fn changes(Caller(s): Caller) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.store.changes();
    // The first event says where the store is, so a page that read before it subscribed
    // knows whether it missed a change.
    let now = *rx.borrow();
    let first =
        futures::stream::once(
            async move { Ok(Event::default().event("change").data(now.to_string())) },
        );
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let revision = *rx.borrow_and_update();
        let event = Event::default().event("change").data(revision.to_string());
        Some((Ok(event), rx))
    });
    Sse::new(first.chain(stream)).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct ApprovalAsked {
    release: String,
    stage: String,
    decision: Decision,
    #[serde(default)]
    comment: Option<String>,
}

async fn approve(
    State(app): State<App>,
    Caller(s): Caller,
    headers: HeaderMap,
    Json(asked): Json<ApprovalAsked>,
) -> Response {
    if let Some(refused) = guard::refuse_action(&headers, &s.csrf, &app.hosts) {
        return refused;
    }
    let comment = asked.comment.filter(|c| !c.trim().is_empty());
    match act::approve(
        &s.ctx,
        &asked.release,
        &asked.stage,
        asked.decision,
        comment,
    )
    .await
    {
        Ok(judged) => Json(judged).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
struct CommandAsked {
    stage: String,
    action: CommandAction,
    /// The release to retry; for a promote, the release the page showed rolling out.
    #[serde(default)]
    release: Option<String>,
}

async fn command(
    State(app): State<App>,
    Caller(s): Caller,
    headers: HeaderMap,
    Json(asked): Json<CommandAsked>,
) -> Response {
    if let Some(refused) = guard::refuse_action(&headers, &s.csrf, &app.hosts) {
        return refused;
    }
    if !matches!(
        asked.action,
        CommandAction::Promote | CommandAction::Abort | CommandAction::Retry
    ) {
        return error(
            StatusCode::BAD_REQUEST,
            "the dashboard sends promote, abort and retry only".into(),
        );
    }
    let release = asked.release.filter(|r| !r.is_empty());
    if asked.action == CommandAction::Retry && release.is_none() {
        return error(StatusCode::BAD_REQUEST, "name the release to retry".into());
    }
    if let Some(stale) = unseen(&s, &asked.stage, asked.action, release.as_deref()) {
        return error(StatusCode::CONFLICT, stale);
    }
    // Only a retry names its release in the StageCommand; a promote's is checked above.
    let release = release.filter(|_| asked.action == CommandAction::Retry);
    let spec = StageCommandSpec {
        stage: asked.stage,
        action: asked.action,
        release,
        comment: Some("from the dashboard".into()),
        reason: None,
        reference: None,
        post_mortem: None,
        requested_by: None,
        stage_ref: None,
    };
    match act::command(&s.ctx, spec).await {
        Ok(handled) => Json(handled).into_response(),
        Err(e) => failure(e),
    }
}

/// Why a promote would not act on what the page showed: the stage rolls out another
/// release than the one it saw, as far as the dashboard's watch knows. (The StageCommand
/// cannot name its release, so a change in the moment after is not caught.) An abort is
/// never held up: it takes traffic off whatever rolls out.
fn unseen(
    s: &Session,
    stage: &str,
    action: CommandAction,
    release: Option<&str>,
) -> Option<String> {
    match (action, release) {
        (CommandAction::Promote, seen) => {
            let stages = s.store.stages();
            let found = stages
                .iter()
                .find(|st| st.metadata.name.as_deref() == Some(stage));
            let now = found.and_then(|st| {
                st.status
                    .as_ref()?
                    .rollout
                    .as_ref()
                    .map(|r| r.release.clone())
            });
            (now.as_deref() != seen).then(|| {
                format!(
                    "{stage} now rolls out {}: look again before promoting",
                    now.as_deref().unwrap_or("nothing")
                )
            })
        }
        _ => None,
    }
}

fn not_found(kind: &str, name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no {kind} '{name}' here"))
}

/// A failed action, with the apiserver's own words.
fn failure(e: PluginError) -> Response {
    let status = match &e {
        PluginError::Forbidden(_) => StatusCode::FORBIDDEN,
        PluginError::NotFound { .. } => StatusCode::NOT_FOUND,
        PluginError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        // The apiserver refused what was asked (a field, admission).
        PluginError::Api(_) => StatusCode::UNPROCESSABLE_ENTITY,
        PluginError::Unreachable(_) | PluginError::NoCrds => StatusCode::BAD_GATEWAY,
        PluginError::Config(_) | PluginError::Terminal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match e {
        PluginError::Forbidden(m) => format!("forbidden: {m}"),
        other => other.to_string(),
    };
    error(status, message)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
