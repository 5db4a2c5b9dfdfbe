//! `kubectl greenlight dashboard` in a real browser: Debian's Chromium, driven over the
//! DevTools protocol (chromiumoxide), against the dashboard of a pipeline mid-canary on the
//! real control plane, as a release manager and as a viewer. Screenshots of each view go to
//! `target/dashboard/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::{Page, ScreenshotParams};
use futures::StreamExt;
use kube::api::ListParams;
use serde_json::Value;

use super::canary::{image, start_bed_with};
use crate::env::{TestEnv, release_yaml, target_yaml};
use crate::support::figures;
use crate::support::oidc::Issuer;
use greenlight::api::Approval;

/// A canary that stops at 20% for a person, measured in the background meanwhile.
const PAUSED: &str = "      - setWeight: 20\n      - pause: {}\n";

/// Notes CI wrote, which must reach the page as text.
const NOTES: &str =
    r#"<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> fixes #12"#;

/// The canary world, plus `dr`: after prod, behind a release manager's approval.
fn with_dr(world: String) -> String {
    format!(
        "{world}---\n{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: dr-signoff}}\nspec:\n  type: approval\n  approval: {{groups: [release-managers], required: 1}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: dr}}\nspec:\n  pipeline: shop\n  requires: [prod]\n  target: {{name: web-dr}}\n  gates: [dr-signoff]\n",
        target_yaml("web-dr")
    )
}

/// erin may read everything and decide nothing: the shipped viewer Role.
fn erin_is_a_viewer(env: &TestEnv) {
    let root = env!("CARGO_MANIFEST_DIR");
    env.cp.kubectl(&[
        "apply",
        "-n",
        &env.ns,
        "-f",
        &format!("{root}/config/rbac/viewer-example.yaml"),
    ]);
    env.apply("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: viewer}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: greenlight-viewer}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: erin}]\n");
}

pub async fn the_dashboard_shows_a_canary_mid_flight_and_acts_only_as_each_user_may(
    mut env: TestEnv,
) {
    env.grant_example_roles();
    erin_is_a_viewer(&env);
    let v2 = image("healthy", "v2");
    let _bed = start_bed_with(&mut env, &image("healthy", "v1"), &[&v2], PAUSED, with_dr).await;
    let notes = format!(
        "{}  notes: |\n    {NOTES}\n",
        release_yaml("v2", "shop", "2.0.0", &v2)
    );
    env.apply(&notes);
    a_version_holding_markup_is_refused_by_the_schema(&env);
    wait_measured(&env, 3).await;

    let browser = Chromium::launch(&env).await;
    let alice = Dashboard::start(&env, Some("alice"));
    let erin = Dashboard::start(&env, Some("erin"));
    the_pipeline_view_draws_the_graph_with_the_canary(&browser, &alice).await;
    the_analysis_view_charts_one_point_per_measurement(&browser, &alice).await;
    ci_text_renders_as_text(&browser, &alice).await;
    a_viewer_who_approves_sees_the_apiservers_refusal(&env, &browser, &erin).await;
    an_action_without_the_key_the_csrf_token_or_from_elsewhere_is_refused(&env, &alice).await;
    a_release_manager_approves_and_the_page_follows_live(&env, &browser, &alice).await;
    the_insight_view_shows_delivery_figures(&browser, &alice).await;
}

fn a_version_holding_markup_is_refused_by_the_schema(env: &TestEnv) {
    let markup = release_yaml(
        "v3",
        "shop",
        "3<script>alert(1)</script>",
        &image("v3", "v3"),
    );
    let out = env.apply_raw(&markup);
    assert!(
        !out.status.success(),
        "a version with markup is refused by the CRD's pattern"
    );
}

/// Until prod's background analysis has measured `n` times.
async fn wait_measured(env: &TestEnv, n: usize) {
    env.wait_for(
        "prod's analysis measured",
        Duration::from_secs(90),
        || async {
            let stage = env.stage("prod").await.status.ok_or("no status")?;
            let canary = stage.rollout.and_then(|r| r.canary).ok_or("no canary")?;
            let measured = canary.analysis.iter().map(|a| a.history.len()).max();
            match measured {
                Some(m) if m >= n => Ok(()),
                other => Err(format!("{other:?} measurements, phase {:?}", canary.phase)),
            }
        },
    )
    .await;
}

async fn the_pipeline_view_draws_the_graph_with_the_canary(browser: &Chromium, alice: &Dashboard) {
    let page = browser.open(&alice.view("#/pipeline/shop")).await;
    let prod = browser
        .wait(
            &page,
            "prod's card with its canary",
            r#"document.querySelector('[data-stage="prod"] .canary')?.textContent"#,
        )
        .await;
    assert!(prod.as_str().unwrap().contains("20%"), "{prod}");
    let graph = browser
        .eval(
            &page,
            r#"({stages: [...document.querySelectorAll('.stage')].map(s => s.dataset.stage),
                 edges: [...document.querySelectorAll('path.edge')].map(e => e.dataset.from + '>' + e.dataset.to),
                 current: document.querySelector('[data-stage="prod"] .current').textContent,
                 candidate: document.querySelector('[data-stage="prod"] .candidate').textContent,
                 phase: document.querySelector('[data-stage="prod"] h3 .badge').textContent,
                 gate: document.querySelector('[data-stage="dr"] [data-gate="dr-signoff"]')?.textContent})"#,
        )
        .await;
    assert_eq!(
        graph["stages"],
        serde_json::json!(["prod", "dr"]),
        "{graph}"
    );
    assert_eq!(graph["edges"], serde_json::json!(["prod>dr"]), "{graph}");
    assert_eq!(graph["current"], "1 (v1)", "{graph}");
    assert_eq!(graph["candidate"], "2.0.0 (v2)", "{graph}");
    assert_eq!(graph["phase"], "Progressing", "{graph}");
    assert!(
        graph["gate"]
            .as_str()
            .unwrap_or_default()
            .contains("0 of 1"),
        "dr says why it waits, with its tally: {graph}"
    );
    browser.screenshot(&page, "pipeline").await;
}

async fn the_analysis_view_charts_one_point_per_measurement(browser: &Chromium, alice: &Dashboard) {
    let page = browser.open(&alice.view("#/analysis/prod")).await;
    let chart = browser
        .wait(
            &page,
            "the error-rate chart",
            r#"(() => { const c = document.querySelector('.chart[data-gate="error-rate"]');
                 return c && c.querySelector('canvas') ? {points: Number(c.dataset.points),
                   rows: c.querySelectorAll('tr.measurement').length,
                   threshold: c.querySelector('h2').textContent} : null })()"#,
        )
        .await;
    assert!(chart["points"].as_u64().unwrap() >= 3, "{chart}");
    assert_eq!(chart["points"], chart["rows"], "one row per point: {chart}");
    assert!(
        chart["threshold"].as_str().unwrap().contains("< 0.01"),
        "{chart}"
    );
    browser.screenshot(&page, "analysis").await;
}

async fn ci_text_renders_as_text(browser: &Chromium, alice: &Dashboard) {
    let page = browser.open(&alice.view("#/release/v2")).await;
    let notes = browser
        .wait(
            &page,
            "the release's notes",
            "document.getElementById('release-notes')?.textContent",
        )
        .await;
    assert_eq!(
        notes.as_str().unwrap().trim(),
        NOTES,
        "the notes, as written"
    );
    let images = browser
        .eval(
            &page,
            "document.getElementById('release-images').textContent",
        )
        .await;
    let v2 = image("healthy", "v2");
    assert_eq!(
        images.as_str().unwrap(),
        format!("web{v2}"),
        "the release's image, by name"
    );
    let injected = browser
        .eval(
            &page,
            "({pwned: window.pwned ?? null, scripts: document.querySelectorAll('main script').length, images: document.querySelectorAll('main img').length})",
        )
        .await;
    assert_eq!(
        injected,
        serde_json::json!({"pwned": null, "scripts": 0, "images": 0}),
        "nothing CI wrote ran or became markup"
    );
    browser.screenshot(&page, "release").await;
}

async fn approvals(env: &TestEnv) -> Vec<Approval> {
    let api = env.api::<Approval>();
    api.list(&ListParams::default()).await.unwrap().items
}

async fn a_viewer_who_approves_sees_the_apiservers_refusal(
    env: &TestEnv,
    browser: &Chromium,
    erin: &Dashboard,
) {
    let page = browser.open(&erin.view("#/pipeline/shop")).await;
    let result = browser
        .approve_at(&page, "dr", "bad", "erin's refusal")
        .await;
    let result = result.as_str().unwrap();
    assert!(
        result.contains("forbidden") && result.contains("erin"),
        "the apiserver's own words: {result}"
    );
    assert!(approvals(env).await.is_empty(), "nothing was created");
    browser.screenshot(&page, "forbidden").await;
}

/// What reaches the dashboard besides its page: another user of the machine (the port, but
/// not the key), another site's page (another origin, a rebound name), and an action without
/// the page's token. None of it creates anything.
async fn an_action_without_the_key_the_csrf_token_or_from_elsewhere_is_refused(
    env: &TestEnv,
    alice: &Dashboard,
) {
    let http = no_redirects();
    another_local_user_without_the_key_is_refused(&http, alice).await;
    let token = page_token(&http, alice).await;
    let body = serde_json::json!({"release": "v1", "stage": "dr", "decision": "approve"});
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = http
            .post(alice.at("api/approvals"))
            .json(&body)
            .header("cookie", alice.cookie());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let no_token = post(vec![]).await.unwrap();
    assert_eq!(no_token.status(), 403);
    assert!(no_token.text().await.unwrap().contains("CSRF"));
    let elsewhere = post(vec![
        ("x-greenlight-csrf", token.clone()),
        ("origin", "http://evil.example".into()),
    ])
    .await
    .unwrap();
    assert_eq!(elsewhere.status(), 403, "an action from another origin");
    let rebound = post(vec![
        ("x-greenlight-csrf", token.clone()),
        ("host", "evil.example:3100".into()),
    ])
    .await
    .unwrap();
    assert_eq!(rebound.status(), 421, "a host the dashboard does not serve");
    let cross_site = http
        .get(alice.at("api/releases/v1"))
        .header("cookie", alice.cookie())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cross_site.status(),
        403,
        "another site's page reading through the browser"
    );
    let linked = http
        .get(alice.at(""))
        .header("cookie", alice.cookie())
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(
        linked.status(),
        200,
        "a link from another site opens the page"
    );
    assert!(
        approvals(env).await.is_empty(),
        "none of them created anything"
    );
}

/// The port is anyone's on this machine; the key is not.
async fn another_local_user_without_the_key_is_refused(http: &reqwest::Client, alice: &Dashboard) {
    let stranger = http.get(alice.at("api/pipelines")).send().await.unwrap();
    assert_eq!(
        stranger.status(),
        401,
        "another local user, without the key"
    );
    let guessed = http.get(alice.at("?key=0000")).send().await.unwrap();
    assert_eq!(guessed.status(), 403, "a wrong key");
    let page = http.get(alice.view("")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

/// The page's CSRF token, as the page carries it; its CSP forbids any inline script.
async fn page_token(http: &reqwest::Client, alice: &Dashboard) -> String {
    let page = http
        .get(alice.at(""))
        .header("cookie", alice.cookie())
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    let token = html.split("name=\"csrf-token\" content=\"").nth(1).unwrap();
    token.split('"').next().unwrap().to_string()
}

async fn a_release_manager_approves_and_the_page_follows_live(
    env: &TestEnv,
    browser: &Chromium,
    alice: &Dashboard,
) {
    let page = browser.open(&alice.view("#/pipeline/shop")).await;
    browser
        .wait(
            &page,
            "dr's card",
            r#"document.querySelector('[data-stage="dr"] button[data-action="approve"]')"#,
        )
        .await;
    browser.eval(&page, "window.sameLoad = true").await;
    let result = browser
        .approve_at(&page, "dr", "ok", "alice's approval counted")
        .await;
    assert!(
        result.as_str().unwrap().contains("counts toward gate"),
        "{result}"
    );
    let made = approvals(env).await;
    let by: Vec<_> = made
        .iter()
        .filter_map(|a| Some(a.spec.approver.as_ref()?.username.clone()))
        .collect();
    assert_eq!(by, ["alice"], "one Approval, by alice");
    let running = browser
        .wait(&page, "dr running v1, without a reload", r#"(document.querySelector('[data-stage="dr"] .current')?.textContent ?? '').includes('(v1)') && window.sameLoad"#)
        .await;
    assert_eq!(running, true);
    browser.screenshot(&page, "approved").await;
}

async fn the_insight_view_shows_delivery_figures(browser: &Chromium, alice: &Dashboard) {
    let page = browser.open(&alice.view("#/insight")).await;
    let shop = browser
        .wait(
            &page,
            "shop's figures",
            r#"(() => { const s = document.querySelector('[data-pipeline="shop"]');
            return s && s.querySelector('canvas') ? s.textContent : null })()"#,
        )
        .await;
    assert!(shop.as_str().unwrap().contains("Deployments"), "{shop}");
    browser.screenshot(&page, "insight").await;
}

/// Five lanes of ten stages, each requiring the one before it in its lane, and a release
/// on its way through them.
fn fifty_stages() -> String {
    let mut yaml = String::new();
    for lane in 0..5 {
        for depth in 0..10 {
            let name = format!("l{lane}-s{depth}");
            let requires = match depth {
                0 => String::new(),
                d => format!("  requires: [l{lane}-s{}]\n", d - 1),
            };
            yaml += &format!(
                "{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: {name}}}\nspec:\n  pipeline: wide\n  target: {{name: {name}}}\n{requires}---\n",
                target_yaml(&name)
            );
        }
    }
    yaml + &release_yaml("w1", "wide", "1.0.0", &image("w1", "w1"))
}

pub async fn a_pipeline_of_50_stages_is_drawn_whole_and_its_first_render_and_weight_are_measured(
    mut env: TestEnv,
) {
    env.start_controller();
    env.apply(&fifty_stages());
    let browser = Chromium::launch(&env).await;
    let admin = Dashboard::start(&env, None);
    let started = std::time::Instant::now();
    let page = browser.open(&admin.view("#/pipeline/wide")).await;
    browser
        .wait(&page, "50 stage cards", "document.querySelectorAll('.stage').length === 50 && document.querySelectorAll('path.edge').length")
        .await;
    figures::record(
        "dashboard: first render of a 50-stage pipeline",
        started.elapsed(),
    );
    let drawn = browser
        .eval(&page, "({stages: document.querySelectorAll('.stage').length, edges: document.querySelectorAll('path.edge').length, columns: document.querySelectorAll('.column').length})")
        .await;
    assert_eq!(
        drawn,
        serde_json::json!({"stages": 50, "edges": 45, "columns": 10}),
        "every stage, every edge, one column per depth"
    );
    let weight = browser
        .eval(&page, "performance.getEntriesByType('navigation')[0].transferSize + performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize, 0)")
        .await;
    let bytes = weight.as_f64().expect("a byte count");
    let loaded = browser
        .eval(
            &page,
            "performance.getEntriesByType('resource').map(r => new URL(r.name).pathname)",
        )
        .await;
    for part in [
        "/assets/app.js",
        "/assets/vendor/uplot/uPlot.iife.min.js",
        "/api/pipelines/wide",
    ] {
        assert!(
            loaded.as_array().unwrap().iter().any(|p| p == part),
            "the weight counts {part}: {loaded}"
        );
    }
    assert!(
        bytes > 50_000.0,
        "the page, its script, the chart library and the data: {bytes}"
    );
    figures::record_bytes(
        "dashboard: bytes transferred on first load, 50 stages",
        bytes as u64,
    );
    browser.screenshot(&page, "fifty-stages").await;
}

/// dev, then prod behind a release manager's approval.
fn signed_in_world() -> String {
    format!(
        "{}---\n{}---\napiVersion: greenlight.dev/v1alpha1\nkind: Gate\nmetadata: {{name: prod-signoff}}\nspec:\n  type: approval\n  approval: {{groups: [release-managers], required: 1}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: dev}}\nspec:\n  pipeline: shop\n  target: {{name: web-dev}}\n---\napiVersion: greenlight.dev/v1alpha1\nkind: Stage\nmetadata: {{name: prod}}\nspec:\n  pipeline: shop\n  requires: [dev]\n  target: {{name: web}}\n  gates: [prod-signoff]\n",
        target_yaml("web-dev"),
        target_yaml("web")
    )
}

/// The dashboard's account gets the chart's own impersonation ClusterRole, narrowed to the two
/// groups people here are in, and nothing else.
fn the_dashboard_account_may_only_impersonate(env: &TestEnv) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/hack/helm.py"))
        .args([
            "render",
            &format!("{root}/charts/greenlight"),
            "--name",
            "gl",
            "--namespace",
            &env.ns,
        ])
        .args([
            "--set",
            "webDashboard.enabled=true",
            "--set",
            "webDashboard.publicUrl=https://gl.example.com",
        ])
        .args([
            "--set",
            "webDashboard.impersonateGroups={release-managers,developers}",
        ])
        .args([
            "--set",
            "webDashboard.oidc.issuer=https://idp.example.com",
            "--set",
            "webDashboard.oidc.clientId=gl",
        ])
        .output()
        .expect("render the chart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    let role = rendered
        .split("\n---")
        .find(|doc| {
            doc.contains("kind: ClusterRole\n") && doc.contains("web-dashboard-impersonate")
        })
        .expect("the chart's impersonation ClusterRole");
    let role = role.replace(
        "gl-greenlight-web-dashboard-impersonate",
        &format!("dashboard-{}", env.ns),
    );
    let user = crate::support::controlplane::DASHBOARD_USER;
    env.apply(&format!("{role}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: dashboard-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dashboard-{ns}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n", ns = env.ns));
    let own = env.kubectl_as(user, &["get", "stages", "-n", &env.ns], "");
    assert!(
        !own.status.success(),
        "the dashboard's own account reads nothing"
    );
}

pub async fn people_signed_in_at_an_oidc_issuer_see_and_do_only_what_rbac_grants_them(
    mut env: TestEnv,
) {
    env.grant_example_roles();
    let root = env!("CARGO_MANIFEST_DIR");
    env.cp.kubectl(&[
        "apply",
        "-n",
        &env.ns,
        "-f",
        &format!("{root}/config/rbac/viewer-example.yaml"),
    ]);
    env.apply("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: developers-view}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: greenlight-viewer}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: developers}]\n");
    the_dashboard_account_may_only_impersonate(&env);
    env.start_admitted_controller().await;
    env.apply(&signed_in_world());
    env.apply(&release_yaml("v1", "shop", "1.0.0", &image("v1", "v1")));
    env.wait_release_stage("v1", "dev", "Succeeded", Duration::from_secs(60))
        .await;

    let issuer = Issuer::start(&[
        ("alice", &["release-managers"]),
        ("erin", &["developers"]),
        ("mallory", &["system:masters"]),
    ])
    .await;
    let dashboard = SignedIn::start(&env, &issuer.url);
    nobody_signed_in_reaches_anything(&dashboard).await;
    a_token_naming_a_system_group_is_refused(&dashboard, &issuer).await;

    a_developer_signed_in_sees_the_pipeline_and_is_refused_an_approval(&env, &dashboard, &issuer)
        .await;
    a_release_manager_signed_in_approves_as_herself(&env, &dashboard, &issuer).await;
    assert_eq!(
        issuer.refused(),
        Vec::<String>::new(),
        "every code came back with its PKCE verifier"
    );
}

/// erin, in the developers group, reads through her group's binding and may not approve.
async fn a_developer_signed_in_sees_the_pipeline_and_is_refused_an_approval(
    env: &TestEnv,
    dashboard: &SignedIn,
    issuer: &Issuer,
) {
    issuer.sign_in_as("erin");
    let erins = Chromium::launch_as(env, "erin").await;
    let page = erins.open(&dashboard.0.view("#/pipeline/shop")).await;
    erins
        .wait(
            &page,
            "erin signed in",
            "document.getElementById('who').textContent.startsWith('erin ')",
        )
        .await;
    let refused = erins
        .approve_at(&page, "prod", "bad", "erin's refusal")
        .await;
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains(r#"User "erin" cannot create"#),
        "{refused}"
    );
    assert!(
        approvals(env).await.is_empty(),
        "erin's group may read, not decide"
    );
    erins.screenshot(&page, "oidc-viewer").await;
}

/// alice, a release manager, approves: the Approval is hers, with her group, and counts.
async fn a_release_manager_signed_in_approves_as_herself(
    env: &TestEnv,
    dashboard: &SignedIn,
    issuer: &Issuer,
) {
    issuer.sign_in_as("alice");
    let alices = Chromium::launch_as(env, "alice").await;
    let page = alices.open(&dashboard.0.view("#/pipeline/shop")).await;
    alices
        .wait(
            &page,
            "alice signed in",
            "document.getElementById('who').textContent.startsWith('alice ')",
        )
        .await;
    let counted = alices
        .approve_at(&page, "prod", "ok", "alice's approval")
        .await;
    assert!(
        counted.as_str().unwrap().contains("counts toward gate"),
        "{counted}"
    );
    let made = approvals(env).await;
    let approver = made[0].spec.approver.clone().expect("stamped by admission");
    assert_eq!((made.len(), approver.username.as_str()), (1, "alice"));
    assert!(
        approver.groups.contains(&"release-managers".to_string()),
        "{approver:?}"
    );
    alices.screenshot(&page, "oidc-release-manager").await;
}

/// Without a session: the page sends the browser to sign in, the data answers 401, and a
/// callback that is not the answer to a sign-in is refused.
async fn nobody_signed_in_reaches_anything(dashboard: &SignedIn) {
    let http = no_redirects();
    let page = http.get(dashboard.0.at("")).send().await.unwrap();
    assert!(page.status().is_redirection());
    assert_eq!(page.headers()["location"], "/auth/login");
    let linked = http
        .get(dashboard.0.at(""))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(
        linked.headers()["location"],
        "/auth/login",
        "a link from another site signs in"
    );
    let data = http
        .get(dashboard.0.at("api/pipelines"))
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), 401);
    let forged = http
        .get(dashboard.0.at("auth/callback?code=x&state=made-up"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

/// An issuer that puts someone in `system:masters` does not make them cluster-admin; and
/// the issuer's answer, brought by a browser that did not start that sign-in (someone else's
/// link), signs nobody in.
async fn a_token_naming_a_system_group_is_refused(dashboard: &SignedIn, issuer: &Issuer) {
    issuer.sign_in_as("mallory");
    let http = no_redirects();
    let started = http.get(dashboard.0.at("auth/login")).send().await.unwrap();
    let sealed = started.headers()["set-cookie"].to_str().unwrap();
    let sealed = sealed.split(';').next().unwrap().to_string();
    let authorize = started.headers()["location"].to_str().unwrap().to_string();
    let answered = http.get(&authorize).send().await.unwrap();
    let callback = answered.headers()["location"].to_str().unwrap().to_string();
    let elsewhere = http.get(&callback).send().await.unwrap();
    assert_eq!(elsewhere.status(), 403);
    assert!(
        elsewhere
            .text()
            .await
            .unwrap()
            .contains("not started in this browser")
    );
    let back = http
        .get(&callback)
        .header("cookie", sealed)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 403);
    assert!(back.text().await.unwrap().contains("system:masters"));
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `greenlight dashboard --auth oidc` with the dashboard's own account, on a free port.
struct SignedIn(Dashboard);

impl SignedIn {
    fn start(env: &TestEnv, issuer: &str) -> SignedIn {
        let port = crate::support::free_port();
        let address = format!("127.0.0.1:{port}");
        let mut child = Command::new(crate::support::workspace_bin("greenlight"))
            .args([
                "dashboard",
                "--auth",
                "oidc",
                "--address",
                &address,
                "-n",
                &env.ns,
            ])
            .args([
                "--public-url",
                &format!("http://{address}"),
                "--oidc-issuer",
                issuer,
            ])
            .args([
                "--oidc-client-id",
                crate::support::oidc::CLIENT_ID,
                "--oidc-username-claim",
                "sub",
            ])
            .arg("--kubeconfig")
            .arg(
                env.cp
                    .kubeconfig_for(crate::support::controlplane::DASHBOARD_USER),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("start greenlight dashboard");
        let line = first_line(&mut child);
        assert!(line.contains(&address), "{line:?}");
        SignedIn(Dashboard {
            child,
            url: format!("http://{address}/"),
            key: None,
        })
    }
}

/// `kubectl greenlight dashboard` as `user`, on a port of its own.
struct Dashboard {
    child: Child,
    url: String,
    /// The local dashboard's key; none for the signed-in one.
    key: Option<String>,
}

impl Dashboard {
    /// As `user`, or as the admin when `None`.
    fn start(env: &TestEnv, user: Option<&str>) -> Dashboard {
        let kubeconfig =
            user.map_or_else(|| env.cp.kubeconfig.clone(), |u| env.cp.kubeconfig_for(u));
        let mut child = Command::new(crate::support::workspace_bin("kubectl-greenlight"))
            .args([
                "dashboard",
                "--address",
                "127.0.0.1:0",
                "-n",
                &env.ns,
                "--kubeconfig",
            ])
            .arg(kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the dashboard");
        let line = first_line(&mut child);
        let printed = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        let (url, key) = printed
            .split_once("?key=")
            .expect("a key in the printed address");
        Dashboard {
            child,
            url: url.to_string(),
            key: Some(key.to_string()),
        }
    }

    /// A view of the page, by the address the dashboard printed (its key, then the view).
    fn view(&self, fragment: &str) -> String {
        match &self.key {
            Some(key) => format!("{}?key={key}{fragment}", self.url),
            None => format!("{}{fragment}", self.url),
        }
    }

    /// A path on the server, for a client that brings the cookie itself.
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The cookie the key is swapped for.
    fn cookie(&self) -> String {
        let port = self.url.rsplit(':').next().unwrap().trim_end_matches('/');
        format!(
            "greenlight_local_{port}={}",
            self.key.as_deref().unwrap_or_default()
        )
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a dashboard printed first: the address it serves.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("its first line");
    line
}

/// Headless Chromium over the DevTools protocol.
struct Chromium {
    browser: Browser,
    shots: PathBuf,
}

impl Chromium {
    async fn launch(env: &TestEnv) -> Chromium {
        Self::launch_as(env, "chromium").await
    }

    /// A browser with a profile of its own (`profile`): its own cookies.
    async fn launch_as(env: &TestEnv, profile: &str) -> Chromium {
        let config = BrowserConfig::builder()
            .chrome_executable("/usr/bin/chromium")
            .no_sandbox()
            .user_data_dir(env.dir.join(profile))
            .window_size(1400, 1000)
            .viewport(None)
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .build()
            .expect("a browser configuration");
        let (browser, mut handler) = Browser::launch(config)
            .await
            .expect("Chromium starts (hack/install-deps.sh installs it)");
        tokio::spawn(async move { while handler.next().await.is_some() {} });
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
        std::fs::create_dir_all(&shots).unwrap();
        Chromium { browser, shots }
    }

    async fn open(&self, url: &str) -> Page {
        let page = self.browser.new_page(url).await.expect("a page");
        page.wait_for_navigation().await.expect("loaded");
        page
    }

    /// `expression`'s value, or null when it throws.
    async fn eval(&self, page: &Page, expression: &str) -> Value {
        let guarded = format!(
            "(() => {{ try {{ return ({expression}) ?? null }} catch (e) {{ return null }} }})()"
        );
        let result = page.evaluate(guarded).await.expect("evaluated");
        result.into_value::<Value>().unwrap_or(Value::Null)
    }

    /// Until `expression` is truthy on the page; its value.
    async fn wait(&self, page: &Page, what: &str, expression: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let value = self.eval(page, expression).await;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if std::time::Instant::now() > deadline {
                let body = self.eval(page, "document.body.innerText").await;
                panic!("90s waiting for {what}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Approve on `stage`'s card, confirmed, as a person clicks it; the card's result once it
    /// is `outcome` (`ok` or `bad`).
    async fn approve_at(&self, page: &Page, stage: &str, outcome: &str, what: &str) -> Value {
        let card = format!(r#"[data-stage="{stage}"]"#);
        self.click(page, &format!(r#"{card} button[data-action="approve"]"#))
            .await;
        self.click(page, "#confirm-ok").await;
        let result = format!("document.querySelector('{card} .result.{outcome}')?.textContent");
        self.wait(page, what, &result).await
    }

    /// A real click (the DevTools protocol's mouse events) on the element `selector` names.
    async fn click(&self, page: &Page, selector: &str) {
        self.wait(
            page,
            selector,
            &format!("document.querySelector({selector:?})"),
        )
        .await;
        let element = page.find_element(selector).await.expect("the element");
        element.click().await.expect("clicked");
    }

    async fn screenshot(&self, page: &Page, name: &str) {
        let path = self.shots.join(format!("{name}.png"));
        let params = ScreenshotParams::builder().full_page(true).build();
        page.save_screenshot(params, &path)
            .await
            .expect("a screenshot");
    }
}
