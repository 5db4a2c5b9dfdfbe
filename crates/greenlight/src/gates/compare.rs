//! The `compare` gate: is the canary worse than the primary it serves beside? Each metric's
//! query runs as a range query over the same window, once for each workload; the judge
//! (`greenlight_core::judge`) compares the two samples metric by metric and scores them.
//! Pass passes and Fail fails; Marginal and NoData are inconclusive, which the analysis'
//! `onInconclusive` rules handle. The machine keeps the judgement on the Release.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use greenlight_core::judge::{self, Judgement, Sampled, Thresholds, Verdict};
use jiff::{SignedDuration, Timestamp};

use super::prom_client::PromClient;
use super::promql::QueryTemplate;
use super::{GateCheck, GateContext, GateOutcome};
use crate::api::compare::CompareGate;
use crate::api::release::GateVerdict;
use crate::schedule::parse_duration;
use crate::validation::FieldError;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_LOOKBACK: Duration = Duration::from_secs(300);
const DEFAULT_STEP: Duration = Duration::from_secs(15);
/// Judgements running at once in the process.
static JUDGES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
const LOOKBACK_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(6 * 3600));

pub struct CompareCheck {
    client: PromClient,
    lookback: Duration,
    step: Duration,
    metrics: Vec<(judge::Metric, QueryTemplate)>,
    weights: BTreeMap<String, f64>,
    thresholds: Thresholds,
}

impl CompareCheck {
    pub fn compile(spec: &CompareGate, env: &super::GateEnv) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let client = PromClient::compile("spec.compare", &spec.server, DEFAULT_TIMEOUT, env)
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        let window = window(spec).map_err(|mut e| errors.append(&mut e)).ok();
        let metrics = metrics(spec, window, &mut errors);
        let (lookback, step) = window.unwrap_or_default();
        let weights = weights(spec, &metrics, &mut errors);
        let thresholds = thresholds(spec, &mut errors);
        match client {
            Some(client) if errors.is_empty() => Ok(Self {
                client,
                lookback,
                step,
                metrics,
                weights,
                thresholds,
            }),
            _ => Err(errors),
        }
    }

    async fn run(&self, ctx: &GateContext) -> GateOutcome {
        if ctx.canary_workload == ctx.primary_workload {
            let why = "nothing to compare with: the release runs on the primary";
            return GateOutcome::new(GateVerdict::Inconclusive, why);
        }
        let (start, end) = self.span(ctx.now, ctx.run);
        if start > end {
            let why = "the analysis has only just begun: no step of its own to compare yet";
            return GateOutcome::new(GateVerdict::Inconclusive, why);
        }
        let mut baseline_ctx = ctx.clone();
        baseline_ctx.canary_workload = ctx.primary_workload.clone();
        let sampling = self.metrics.iter().map(|(metric, query)| {
            let baseline_ctx = &baseline_ctx;
            async move {
                let canary = self.samples(query, ctx, (start, end)).await;
                let baseline = self.samples(query, baseline_ctx, (start, end)).await;
                (metric, canary.and_then(|c| baseline.map(|b| (c, b))))
            }
        });
        // A metric whose query failed has no data; the others are still judged, so harm
        // they show is not lost to one unanswered query.
        let mut unanswered = Vec::new();
        let mut sampled = Vec::new();
        for (metric, samples) in futures::future::join_all(sampling).await {
            let (canary, baseline) = samples.unwrap_or_else(|why| {
                unanswered.push(format!("metric {}: {why}", metric.name));
                Default::default()
            });
            let metric = metric.clone();
            sampled.push(Sampled {
                metric,
                canary,
                baseline,
            });
        }
        let (weights, thresholds) = (self.weights.clone(), self.thresholds);
        // One judgement at a time in the whole process, off the async workers: each may
        // sort 20 × 10⁶ differences, and many stages must not starve the rest.
        let _permit = JUDGES.acquire().await;
        let judging =
            tokio::task::spawn_blocking(move || judge::judge(&sampled, &weights, thresholds));
        let mut outcome = match judging.await {
            Ok(judgement) => outcome(judgement),
            Err(e) => GateOutcome::new(GateVerdict::Inconclusive, format!("the judge failed: {e}")),
        };
        if !unanswered.is_empty() {
            let text = format!("{}; unanswered: {}", outcome.message, unanswered.join("; "));
            outcome.message = super::excerpt(&text, 2000);
        }
        outcome
    }

    /// The window measured: the last `lookback` up to `now`, its ends on whole steps so
    /// that consecutive judgements sample the same instants, and never before the analysis
    /// began: earlier data under the canary's name may be the release before this one.
    fn span(&self, now: Timestamp, since: Option<Timestamp>) -> (Timestamp, Timestamp) {
        let step = self.step.as_secs().max(1) as i64;
        let on_step = |t: i64| t - t.rem_euclid(step);
        let end = Timestamp::from_second(on_step(now.as_second())).unwrap_or(now);
        let lookback = SignedDuration::try_from(self.lookback).unwrap_or_default();
        let floor = since.map(|t| on_step(t.as_second() + step - 1));
        let floor = floor.and_then(|t| Timestamp::from_second(t).ok());
        let start = floor.map_or(end - lookback, |f| f.max(end - lookback));
        (start, end)
    }

    async fn samples(
        &self,
        query: &QueryTemplate,
        ctx: &GateContext,
        span: (Timestamp, Timestamp),
    ) -> Result<Vec<f64>, String> {
        let rendered = query.render(ctx)?;
        self.client
            .range(&rendered, span, self.step, ctx)
            .await
            .map_err(|e| format!("{e} (query: {rendered})"))
    }
}

impl GateCheck for CompareCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(self.run(ctx))
    }
}

/// The gate's verdict, value (the score) and message from the judgement.
fn outcome(judgement: Judgement) -> GateOutcome {
    let verdict = match judgement.verdict {
        Verdict::Pass => GateVerdict::Passed,
        Verdict::Fail => GateVerdict::Failed,
        Verdict::Marginal | Verdict::NoData => GateVerdict::Inconclusive,
    };
    let metrics: Vec<String> = judgement
        .comparisons
        .iter()
        .map(|c| format!("{} {:?} ({})", c.metric, c.class, c.reason))
        .collect();
    let message = super::excerpt(
        &format!(
            "{:?}: {}; {}",
            judgement.verdict,
            judgement.reason,
            metrics.join("; ")
        ),
        1500,
    );
    let mut outcome = GateOutcome::new(verdict, message).with_value(format!("{}", judgement.score));
    outcome.comparison = Some(judgement.status());
    outcome
}

/// The lookback and step, each bounded, and not more than 1,000 steps per lookback.
fn window(spec: &CompareGate) -> Result<(Duration, Duration), Vec<FieldError>> {
    let parse = |field: &str, value: Option<&str>, default: Duration| match value {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|e| FieldError::new(field, e.to_string())),
    };
    let lookback = parse(
        "spec.compare.lookback",
        spec.lookback.as_deref(),
        DEFAULT_LOOKBACK,
    );
    let step = parse("spec.compare.step", spec.step.as_deref(), DEFAULT_STEP);
    let (lookback, step) = match (lookback, step) {
        (Ok(l), Ok(s)) => (l, s),
        (l, s) => return Err(l.err().into_iter().chain(s.err()).collect()),
    };
    let mut errors = Vec::new();
    if !(LOOKBACK_BOUNDS.0..=LOOKBACK_BOUNDS.1).contains(&lookback) {
        errors.push(FieldError::new("spec.compare.lookback", "must be 10s..6h"));
    }
    if step < Duration::from_secs(1) {
        errors.push(FieldError::new("spec.compare.step", "must be at least 1s"));
    } else if lookback.as_secs() / step.as_secs() > judge::MAX_SAMPLES as u64 {
        let why = format!(
            "gives more than {} samples per lookback; make it larger",
            judge::MAX_SAMPLES
        );
        errors.push(FieldError::new("spec.compare.step", why));
    }
    match errors.is_empty() {
        true => Ok((lookback, step)),
        false => Err(errors),
    }
}

/// Each metric with its checked query. The checks that depend on the window are made only
/// when the window itself is valid.
fn metrics(
    spec: &CompareGate,
    window: Option<(Duration, Duration)>,
    errors: &mut Vec<FieldError>,
) -> Vec<(judge::Metric, QueryTemplate)> {
    let mut compiled = Vec::new();
    for (i, m) in spec.metrics.iter().enumerate() {
        let field = format!("spec.compare.metrics[{i}]");
        if spec.metrics[..i].iter().any(|o| o.name == m.name) {
            let why = format!("'{}' is named twice", m.name);
            errors.push(FieldError::new(format!("{field}.name"), why));
        }
        let metric = judge::Metric::from_spec(m);
        let query = QueryTemplate::compile(&m.query).and_then(|q| sides_apart(&q).map(|()| q));
        let query = match (query, window) {
            (Err(why), _) => Err(why),
            (Ok(q), None) => Ok(q),
            (Ok(q), Some((lookback, step))) => {
                let steps = (lookback.as_secs() / step.as_secs().max(1) + 1) as usize;
                if metric.min_samples > steps {
                    let n = metric.min_samples;
                    let why =
                        format!("{n} samples cannot be had: the lookback holds {steps} steps");
                    errors.push(FieldError::new(format!("{field}.minSamples"), why));
                }
                independent(&q, step).map(|()| q)
            }
        };
        match query {
            Ok(query) => compiled.push((metric, query)),
            Err(why) => errors.push(FieldError::new(format!("{field}.query"), why)),
        }
    }
    compiled
}

/// A query that measures each side apart: every selector pins `workload` to exactly
/// `{{workload}}`, and no fact that is the canary's alone (its version, its release, the
/// workload names) would be measured on the primary's side too.
fn sides_apart(query: &QueryTemplate) -> Result<(), String> {
    let one_sided = ["canary", "primary", "version", "release"];
    if let Some(name) = one_sided.iter().find(|n| query.uses(n)) {
        return Err(format!(
            "{{{{{name}}}}} would be the canary's on both sides; select each side by workload=\"{{{{workload}}}}\""
        ));
    }
    match query.pins_everywhere("workload") {
        true => Ok(()),
        false => Err("every selector must have workload=\"{{workload}}\" (exactly, with =), so each side reads only its own workload".into()),
    }
}

/// Samples whose windows do not overlap: the query reads back no further than one step.
fn independent(query: &QueryTemplate, step: Duration) -> Result<(), String> {
    let widest = query.widest_range();
    match widest > step {
        false => Ok(()),
        true => Err(format!(
            "reads back {}s, more than the step of {}s: samples that share data are not independent; make the step at least {}s",
            widest.as_secs(),
            step.as_secs(),
            widest.as_secs()
        )),
    }
}

/// The groups' weights: each group one of the metrics', named once, weighing 1..100. They sum
/// to at most 100 and leave the unweighted groups something; when every group has a weight
/// they sum to 100, or a perfect canary could never reach `pass`.
fn weights(
    spec: &CompareGate,
    metrics: &[(judge::Metric, QueryTemplate)],
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, f64> {
    let mut weights = BTreeMap::new();
    for (i, g) in spec.groups.iter().enumerate() {
        let field = format!("spec.compare.groups[{i}]");
        if !metrics.iter().any(|(m, _)| m.group == g.name) {
            let why = format!("no metric is in group '{}'", g.name);
            errors.push(FieldError::new(format!("{field}.name"), why));
        }
        if !(1.0..=100.0).contains(&g.weight) {
            let why = "must be 1..100: a weight of 0 would silence the group";
            errors.push(FieldError::new(format!("{field}.weight"), why));
        }
        if weights.insert(g.name.clone(), g.weight).is_some() {
            let why = format!("'{}' is weighted twice", g.name);
            errors.push(FieldError::new(format!("{field}.name"), why));
        }
    }
    let given: f64 = weights.values().sum();
    let unweighted = metrics.iter().any(|(m, _)| !weights.contains_key(&m.group));
    let why = match (given > 100.0, unweighted, given >= 100.0, given < 100.0) {
        (true, ..) => Some("the weights sum to more than 100"),
        (false, true, true, _) => Some("the weights leave nothing for the groups without one"),
        (false, false, _, true) if !weights.is_empty() => {
            Some("every group has a weight, so they must sum to 100")
        }
        _ => None,
    };
    if let Some(why) = why {
        errors.push(FieldError::new("spec.compare.groups", why));
    }
    weights
}

fn thresholds(spec: &CompareGate, errors: &mut Vec<FieldError>) -> Thresholds {
    let Some(t) = &spec.thresholds else {
        return judge::DEFAULT_THRESHOLDS;
    };
    let within = |v: f64| (0.0..=100.0).contains(&v);
    if !within(t.pass) || !within(t.marginal) || t.marginal > t.pass {
        let why = "pass and marginal must be 0..100, marginal at most pass";
        errors.push(FieldError::new("spec.compare.thresholds", why));
    }
    Thresholds {
        pass: t.pass,
        marginal: t.marginal,
    }
}

/// The `compare` kind, as registered in [`super::KINDS`].
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Compare
    }

    fn destination(&self, spec: &crate::api::GateSpec) -> Option<(&'static str, String)> {
        let server = spec.compare.as_ref().map(|c| &c.server);
        super::prom_client::destination(server, "spec.compare.address")
    }

    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.compare.is_some()
    }

    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        env: &super::GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let settings = super::settings(spec.compare.as_ref(), self.gate_type())?;
        let check = CompareCheck::compile(settings, env)?;
        Ok((Box::new(check), super::prom_client::needs(&settings.server)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compare::{CompareMetric, MetricGroup, ScoreThresholds};

    const P99: &str =
        r#"histogram_quantile(0.99, sum by (le) (rate(d_bucket{workload="{{workload}}"}[15s])))"#;

    fn env() -> super::super::GateEnv {
        let allow = super::super::allow::AllowList::new(["*"]);
        super::super::GateEnv {
            http: super::super::http_client(&allow),
            webhook_allow: allow,
            prometheus_address: Some("http://prometheus:9090".into()),
            jobs: None,
            operator_account: None,
        }
    }

    fn metric(name: &str, query: &str) -> CompareMetric {
        CompareMetric {
            name: name.into(),
            query: query.into(),
            ..Default::default()
        }
    }

    fn gate(metrics: Vec<CompareMetric>) -> CompareGate {
        CompareGate {
            server: Default::default(),
            lookback: Some("5m".into()),
            step: Some("15s".into()),
            metrics,
            groups: vec![],
            thresholds: None,
        }
    }

    fn refused(spec: &CompareGate) -> Vec<String> {
        match CompareCheck::compile(spec, &env()) {
            Ok(_) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_gate_measuring_the_workload_at_its_step_compiles() {
        assert_eq!(
            refused(&gate(vec![metric("p99", P99)])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_query_that_does_not_name_the_workload_or_names_one_side_is_refused_by_field() {
        let fixed = metric("p99", r#"sum(rate(d{workload="web"}[15s]))"#);
        let one_side = metric("errors", r#"sum(rate(e{workload="{{canary}}"}[15s]))"#);
        let version = metric(
            "v",
            &P99.replace("le)", "le) (x{version=\"{{version}}\"}) or"),
        );
        let loose = metric("loose", r#"sum(rate(e{workload=~"{{workload}}|.*"}[15s]))"#);
        let half = metric(
            "half",
            r#"sum(rate(e{workload="{{workload}}"}[15s])) / sum(rate(e[15s]))"#,
        );
        let errors = refused(&gate(vec![fixed, one_side, version, loose, half]));
        let says = |i: usize, what: &str| {
            let field = format!("spec.compare.metrics[{i}].query: ");
            errors
                .iter()
                .any(|e| e.starts_with(&field) && e.contains(what))
        };
        assert!(says(0, "every selector must have workload="), "{errors:?}");
        assert!(
            says(1, "{{canary}} would be the canary's on both sides"),
            "{errors:?}"
        );
        assert!(says(2, "{{version}} would be the canary's"), "{errors:?}");
        assert!(says(3, "every selector must have"), "{errors:?}");
        assert!(says(4, "every selector must have"), "{errors:?}");
        assert_eq!(errors.len(), 5, "{errors:?}");
    }

    #[test]
    fn samples_that_would_share_data_are_refused_naming_the_step_they_need() {
        let wide = metric("p99", &P99.replace("[15s]", "[1m]"));
        let errors = refused(&gate(vec![wide]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("reads back 60s, more than the step of 15s"),
            "{errors:?}"
        );
        assert!(errors[0].contains("at least 60s"), "{errors:?}");
    }

    #[test]
    fn a_minimum_the_lookback_cannot_hold_and_bad_weights_and_thresholds_are_refused() {
        let mut m = metric("p99", P99);
        m.min_samples = Some(30);
        let mut spec = gate(vec![m, metric("p50", &P99.replace("0.99", "0.5"))]);
        spec.groups = vec![
            MetricGroup {
                name: "p99".into(),
                weight: 80.0,
            },
            MetricGroup {
                name: "latency".into(),
                weight: 30.0,
            },
        ];
        spec.thresholds = Some(ScoreThresholds {
            pass: 70.0,
            marginal: 80.0,
        });
        let errors = refused(&spec);
        let fields: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.compare.metrics[0].minSamples",
                "spec.compare.groups[1].name",
                "spec.compare.groups",
                "spec.compare.thresholds"
            ],
            "{errors:?}"
        );
        assert!(
            errors[0].contains("the lookback holds 21 steps"),
            "{errors:?}"
        );
    }

    #[test]
    fn weights_that_would_silence_a_group_or_cap_the_score_are_refused() {
        let two = || {
            gate(vec![
                metric("p99", P99),
                metric("p50", &P99.replace("0.99", "0.5")),
            ])
        };
        let group = |name: &str, weight: f64| MetricGroup {
            name: name.into(),
            weight,
        };
        let refusal = |groups: Vec<MetricGroup>| {
            let mut spec = two();
            spec.groups = groups;
            refused(&spec).join("; ")
        };
        assert!(refusal(vec![group("p99", 0.0)]).contains("groups[0].weight: must be 1..100"));
        assert!(refusal(vec![group("p99", 100.0)]).contains("leave nothing for the groups"));
        let capped = refusal(vec![group("p99", 40.0), group("p50", 40.0)]);
        assert!(capped.contains("must sum to 100"), "{capped}");
        assert_eq!(refusal(vec![group("p99", 60.0)]), "");
        assert_eq!(refusal(vec![group("p99", 60.0), group("p50", 40.0)]), "");
    }

    #[test]
    fn a_lookback_and_step_out_of_bounds_are_refused() {
        let mut spec = gate(vec![metric("p99", &P99.replace("[15s]", "[1s]"))]);
        (spec.lookback, spec.step) = (Some("7h".into()), Some("500ms".into()));
        let errors = refused(&spec);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.compare.lookback: must be 10s..6h")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.compare.step: must be at least 1s")),
            "{errors:?}"
        );
        (spec.lookback, spec.step) = (Some("6h".into()), Some("1s".into()));
        let errors = refused(&spec);
        assert!(
            errors.iter().any(|e| e.contains("more than 1000 samples")),
            "{errors:?}"
        );
    }

    #[test]
    fn the_window_never_reaches_back_before_the_analysis_began() {
        let check = CompareCheck::compile(&gate(vec![metric("p99", P99)]), &env()).unwrap();
        let now: Timestamp = "2026-12-07T01:00:07Z".parse().unwrap();
        let (start, end) = check.span(now, None);
        assert_eq!(end.to_string(), "2026-12-07T01:00:00Z");
        assert_eq!(start.to_string(), "2026-12-07T00:55:00Z");
        let began: Timestamp = "2026-12-07T00:58:01Z".parse().unwrap();
        let (start, _) = check.span(now, Some(began));
        assert_eq!(
            start.to_string(),
            "2026-12-07T00:58:15Z",
            "the first whole step after it"
        );
    }

    #[test]
    fn a_release_running_on_the_primary_has_nothing_to_compare_with() {
        let check = CompareCheck::compile(&gate(vec![metric("p99", P99)]), &env()).unwrap();
        let mut ctx = super::super::job_tests::ctx();
        ctx.canary_workload = ctx.primary_workload.clone();
        let outcome = futures::executor::block_on(check.run(&ctx));
        assert_eq!(outcome.verdict, GateVerdict::Inconclusive);
        assert!(
            outcome.message.contains("nothing to compare with"),
            "{}",
            outcome.message
        );
    }
}
