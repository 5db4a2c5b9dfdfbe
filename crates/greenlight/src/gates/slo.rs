//! The `slo` gate: a service level objective judged in two ways, by where it is listed.
//! Outside an analysis it asks how much of the period's error budget is left, and holds a
//! release while less than `minBudgetRemaining` is. In a canary analysis it measures the
//! canary's own burn rates over pairs of windows (`greenlight_core::judge::burn`) and fails
//! when a pair burns at least its factor over both. Too few events, an empty answer or an
//! unreachable Prometheus are inconclusive, never a pass.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use greenlight_core::judge::burn::{self, Burn, BurnRule, Events, PairReading};

use super::prom_client::PromClient;
use super::promql::QueryTemplate;
use super::{GateCheck, GateContext, GateOutcome};
use crate::api::release::GateVerdict;
use crate::api::slo::{BurnRate, EventSelector, SloGate};
use crate::schedule::parse_duration;
use crate::validation::FieldError;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DAY: u64 = 86_400;
const DEFAULT_PERIOD: Duration = Duration::from_secs(30 * DAY);
const DEFAULT_HOUR: Duration = Duration::from_secs(600);
const DEFAULT_MIN_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_MIN_EVENTS: f64 = 100.0;
const FIELD: &str = "spec.slo";

pub struct SloCheck {
    client: PromClient,
    /// The objective as a fraction below 1.
    objective: f64,
    period: Duration,
    indicator: Indicator,
    /// The least share of the budget left for the budget check to pass.
    floor: f64,
    rules: Vec<BurnRule>,
    hour: Duration,
    min_window: Duration,
    min_events: f64,
}

enum Indicator {
    /// Counter selectors; `scoped` when both pin `{{workload}}` with `=`, `workload`
    /// when either uses it at all.
    Counters {
        bad: Bad,
        total: String,
        scoped: bool,
        workload: bool,
    },
    /// A query answering the period's error ratio.
    ErrorRatio(QueryTemplate),
}

enum Bad {
    Errors(String),
    Good(String),
}

impl SloCheck {
    pub fn compile(spec: &SloGate, env: &super::GateEnv) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let client = PromClient::compile(FIELD, &spec.server, DEFAULT_TIMEOUT, env)
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        let objective = objective(&spec.objective).map_err(|e| errors.push(e)).ok();
        let period = bounded(
            "period",
            spec.period.as_deref(),
            DEFAULT_PERIOD,
            (3600, 90 * DAY),
        )
        .map_err(|e| errors.push(e))
        .ok();
        let indicator = indicator(spec).map_err(|mut e| errors.append(&mut e)).ok();
        let floor = floor(spec.min_budget_remaining.as_deref()).map_err(|e| errors.push(e));
        let hour = bounded(
            "compressHourTo",
            spec.compress_hour_to.as_deref(),
            DEFAULT_HOUR,
            (60, 3600),
        );
        let min_window = bounded(
            "minWindow",
            spec.min_window.as_deref(),
            DEFAULT_MIN_WINDOW,
            (5, 3600),
        );
        let rules = rules(&spec.burn_rates).map_err(|mut e| errors.append(&mut e));
        let (hour, min_window) = (
            hour.map_err(|e| errors.push(e)),
            min_window.map_err(|e| errors.push(e)),
        );
        match (
            client, objective, period, indicator, floor, rules, hour, min_window,
        ) {
            (
                Some(client),
                Some(objective),
                Some(period),
                Some(indicator),
                Ok(floor),
                Ok(rules),
                Ok(hour),
                Ok(min_window),
            ) if errors.is_empty() => Ok(Self {
                client,
                objective,
                period,
                indicator,
                floor,
                rules,
                hour,
                min_window,
                min_events: spec
                    .min_events
                    .map_or(DEFAULT_MIN_EVENTS, |n| n.max(1) as f64),
            }),
            _ => Err(errors),
        }
    }

    async fn run(&self, ctx: &GateContext) -> GateOutcome {
        match ctx.measuring {
            true => self.burn_rates(ctx).await,
            false => self.budget(ctx).await,
        }
    }

    /// The share of the period's budget left, against the floor.
    async fn budget(&self, ctx: &GateContext) -> GateOutcome {
        let ratio = match &self.indicator {
            Indicator::ErrorRatio(query) => self.error_ratio(query, ctx).await,
            Indicator::Counters { workload: true, .. } => {
                let why = "outside an analysis the gate judges the service's budget, and {{workload}} would name only the canary's series: list a gate whose selectors do not use it";
                return GateOutcome::new(GateVerdict::Invalid, why);
            }
            Indicator::Counters { .. } => {
                let events = self.events(self.period, ctx).await;
                events.and_then(|e| self.enough(&e, &span(self.period)))
            }
        };
        let ratio = match ratio {
            Ok(ratio) => ratio,
            Err(why) => return GateOutcome::new(GateVerdict::Inconclusive, why),
        };
        let left = burn::budget_remaining(ratio, self.objective);
        let allowed = 1.0 - self.objective;
        let text = format!(
            "{} of the error budget left over {} (error ratio {} of {} allowed; floor {})",
            percent(left),
            span(self.period),
            percent(ratio),
            percent(allowed),
            percent(self.floor)
        );
        let verdict = match left > 0.0 && left >= self.floor {
            true => GateVerdict::Passed,
            false => GateVerdict::Failed,
        };
        GateOutcome::new(verdict, text).with_value(percent(left))
    }

    /// The canary's burn rates over each pair of windows, scaled to the analysis.
    async fn burn_rates(&self, ctx: &GateContext) -> GateOutcome {
        if let Err(why) = self.measurable() {
            return GateOutcome::new(GateVerdict::Invalid, why);
        }
        let elapsed = ctx
            .run
            .and_then(|since| Duration::try_from(ctx.now.duration_since(since)).ok())
            // A start in the future (clocks apart) or none known: nothing of its own yet.
            .unwrap_or(Duration::ZERO);
        if elapsed < self.min_window {
            let why = format!(
                "the analysis has run {}s, less than the shortest window ({}): nothing of its own to count yet",
                elapsed.as_secs(),
                span(self.min_window)
            );
            return GateOutcome::new(GateVerdict::Inconclusive, why);
        }
        let rules = burn::scaled(&self.rules, self.hour, self.min_window, elapsed);
        let windows = self.windows(&rules, ctx).await;
        let pairs: Vec<(BurnRule, Events, Events)> = rules
            .iter()
            .map(|r| (*r, counted(&windows, r.long), counted(&windows, r.short)))
            .collect();
        let (verdict, readings) = burn::assess(&pairs, self.objective, self.min_events);
        let unanswered: Vec<&String> = windows.values().filter_map(|w| w.as_ref().err()).collect();
        burn_outcome(verdict, &readings, &unanswered)
    }

    /// Why this gate cannot measure a canary, if it cannot.
    fn measurable(&self) -> Result<(), String> {
        match &self.indicator {
            Indicator::ErrorRatio(_) => Err("a burn-rate analysis counts the canary's events over its own windows: give spec.slo.indicator.ratio, not errorRatio".into()),
            Indicator::Counters { scoped: false, .. } => Err("a burn-rate analysis reads only the canary's series: each selector of spec.slo.indicator.ratio needs an = matcher whose whole value is {{workload}}, e.g. workload=\"{{workload}}\"".into()),
            Indicator::Counters { .. } => Ok(()),
        }
    }

    /// The events of every distinct window, queried at once.
    async fn windows(
        &self,
        rules: &[BurnRule],
        ctx: &GateContext,
    ) -> BTreeMap<Duration, Result<Events, String>> {
        let mut distinct: Vec<Duration> = rules.iter().flat_map(|r| [r.long, r.short]).collect();
        distinct.sort();
        distinct.dedup();
        let counting = distinct
            .iter()
            .map(|w| async move { (*w, self.events(*w, ctx).await) });
        futures::future::join_all(counting)
            .await
            .into_iter()
            .collect()
    }

    /// Bad and all events over the `window` ending now.
    async fn events(&self, window: Duration, ctx: &GateContext) -> Result<Events, String> {
        let Indicator::Counters { bad, total, .. } = &self.indicator else {
            return Err("no counters to count".into());
        };
        let total = self.count(total, window, true, ctx);
        let (bad, good) = match bad {
            Bad::Errors(selector) => (self.count(selector, window, true, ctx), None),
            Bad::Good(selector) => (self.count(selector, window, false, ctx), Some(())),
        };
        let (total, bad) = futures::future::join(total, bad).await;
        let (total, counted) = (total?, bad?);
        let bad = good.map_or(counted, |_| total - counted);
        Ok(Events { bad, total })
    }

    /// The increase of the counters `selector` selects over `window`, summed. With
    /// `none_is_zero` no series counts 0 (no errors); otherwise it is no data.
    async fn count(
        &self,
        selector: &str,
        window: Duration,
        none_is_zero: bool,
        ctx: &GateContext,
    ) -> Result<f64, String> {
        let query = counting_query(selector, window, none_is_zero);
        // The full query is checked again with the release's facts in it, so nothing a
        // placeholder holds can change what it counts.
        let rendered = QueryTemplate::compile(&query).and_then(|t| t.render(ctx))?;
        let value = self.client.instant_now(&rendered, ctx).await;
        value.map_err(|why| format!("{why} (query: {rendered})"))
    }

    async fn error_ratio(&self, query: &QueryTemplate, ctx: &GateContext) -> Result<f64, String> {
        let rendered = query.render(ctx)?;
        match self.client.instant_now(&rendered, ctx).await {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            Ok(r) => Err(format!(
                "the error ratio query answered {r}, which is no ratio between 0 and 1 (query: {rendered})"
            )),
            Err(why) => Err(format!("{why} (query: {rendered})")),
        }
    }

    /// The error ratio of `events`, or why they are too few to tell.
    fn enough(&self, events: &Events, over: &str) -> Result<f64, String> {
        match events.error_ratio() {
            Some(ratio) if events.total >= self.min_events => Ok(ratio),
            _ => Err(format!(
                "too few events to judge: {} over {over}, fewer than {}",
                events.total.max(0.0).round(),
                self.min_events
            )),
        }
    }
}

impl GateCheck for SloCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(self.run(ctx))
    }
}

fn counting_query(selector: &str, window: Duration, none_is_zero: bool) -> String {
    let secs = window.as_secs().max(1);
    let sum = format!("sum(increase({selector}[{secs}s]))");
    match none_is_zero {
        true => format!("{sum} or vector(0)"),
        false => sum,
    }
}

fn counted(windows: &BTreeMap<Duration, Result<Events, String>>, w: Duration) -> Events {
    windows
        .get(&w)
        .and_then(|e| e.as_ref().ok())
        .copied()
        .unwrap_or_default()
}

/// The verdict, the worst long-window rate as the value, and every pair's rates.
fn burn_outcome(verdict: Burn, readings: &[PairReading], unanswered: &[&String]) -> GateOutcome {
    let rate = |r: Option<f64>| r.map_or("no data".to_string(), |r| format!("{r:.1}x"));
    let pairs: Vec<String> = readings
        .iter()
        .map(|r| {
            format!(
                "{} over {} and {} over {} (breach at {}x{})",
                rate(r.long),
                span(r.rule.long),
                rate(r.short),
                span(r.rule.short),
                r.rule.factor,
                if r.breaches() { ": breached" } else { "" }
            )
        })
        .collect();
    let (gate, lead) = match verdict {
        Burn::Breach => (GateVerdict::Failed, "burning the error budget too fast"),
        Burn::Within => (GateVerdict::Passed, "burn rates within bounds"),
        Burn::NoData => (GateVerdict::Inconclusive, "too few events to judge"),
    };
    let mut text = format!("{lead}: {}", pairs.join("; "));
    if !unanswered.is_empty() {
        let why: Vec<&str> = unanswered.iter().map(|s| s.as_str()).collect();
        text = format!("{text}; unanswered: {}", why.join("; "));
    }
    let worst = readings
        .iter()
        .filter_map(|r| r.long)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let outcome = GateOutcome::new(gate, super::excerpt(&text, 1500));
    match worst {
        Some(w) => outcome.with_value(format!("{w:.2}x")),
        None => outcome,
    }
}

fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    match p.abs() {
        a if a >= 10.0 || a == 0.0 => format!("{p:.1}%"),
        _ => format!("{}%", (p * 1e4).round() / 1e4),
    }
}

/// A window as people write it: `30d`, `1h`, `50s`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= DAY && s % DAY == 0 => format!("{}d", s / DAY),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A duration that may begin with whole days (`30d`, `1d12h`).
pub fn parse_slo_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (days, rest) = match text.split_once('d') {
        Some((days, rest)) if !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()) => {
            let days: u64 = days
                .parse()
                .map_err(|_| format!("'{text}' has too many days"))?;
            (days.min(1000), rest)
        }
        _ => (0, text),
    };
    let rest = match rest {
        "" => Duration::ZERO,
        rest => parse_duration(rest).map_err(|e| e.to_string())?,
    };
    Ok(Duration::from_secs(days * DAY) + rest)
}

/// `spec.slo.<name>`, parsed and held to `bounds` (in seconds), or its default.
fn bounded(
    name: &str,
    value: Option<&str>,
    default: Duration,
    (least, most): (u64, u64),
) -> Result<Duration, FieldError> {
    let field = format!("{FIELD}.{name}");
    let Some(text) = value else {
        return Ok(default);
    };
    let d = parse_slo_duration(text).map_err(|why| FieldError::new(&field, why))?;
    match (least..=most).contains(&d.as_secs()) && d.subsec_nanos() == 0 {
        true => Ok(d),
        false => Err(FieldError::new(
            field,
            format!(
                "must be whole seconds from {} to {}",
                span(Duration::from_secs(least)),
                span(Duration::from_secs(most))
            ),
        )),
    }
}

fn objective(text: &str) -> Result<f64, FieldError> {
    let field = format!("{FIELD}.objective");
    match text.trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p < 100.0 => Ok(p / 100.0),
        _ => Err(FieldError::new(
            field,
            format!("'{text}' is no objective: a percentage above 0 and below 100, e.g. \"99.9\""),
        )),
    }
}

fn floor(text: Option<&str>) -> Result<f64, FieldError> {
    let Some(text) = text else { return Ok(0.0) };
    let field = format!("{FIELD}.minBudgetRemaining");
    match text.trim().strip_suffix('%').map(str::parse::<f64>) {
        Some(Ok(p)) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(FieldError::new(
            field,
            format!(
                "'{text}' is no share of the budget: a percentage from 0% to 100%, e.g. \"10%\""
            ),
        )),
    }
}

fn rules(spec: &[BurnRate]) -> Result<Vec<BurnRule>, Vec<FieldError>> {
    if spec.is_empty() {
        return Ok(burn::default_rules());
    }
    let mut errors = Vec::new();
    if spec.len() > 4 {
        errors.push(FieldError::new(
            format!("{FIELD}.burnRates"),
            "at most 4 pairs",
        ));
    }
    let rules: Vec<BurnRule> = spec
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rule(i, r).map_err(|e| errors.push(e)).ok())
        .collect();
    match errors.is_empty() {
        true => Ok(rules),
        false => Err(errors),
    }
}

fn rule(i: usize, spec: &BurnRate) -> Result<BurnRule, FieldError> {
    let field = |name: &str| format!("burnRates[{i}].{name}");
    if !(1.0..=1000.0).contains(&spec.factor) {
        return Err(FieldError::new(
            format!("{FIELD}.{}", field("factor")),
            "must be from 1 to 1000",
        ));
    }
    let long = bounded(
        &field("long"),
        Some(&spec.long),
        Duration::ZERO,
        (60, 30 * DAY),
    )?;
    let short = match spec.short.as_deref() {
        None => Duration::from_secs(long.as_secs() / 12),
        Some(text) => bounded(&field("short"), Some(text), Duration::ZERO, (1, 30 * DAY))?,
    };
    if short >= long {
        let why = "must be shorter than the long window";
        return Err(FieldError::new(format!("{FIELD}.{}", field("short")), why));
    }
    Ok(BurnRule {
        factor: spec.factor,
        long,
        short,
    })
}

fn indicator(spec: &SloGate) -> Result<Indicator, Vec<FieldError>> {
    let field = format!("{FIELD}.indicator");
    match (&spec.indicator.ratio, &spec.indicator.error_ratio) {
        (Some(ratio), None) => {
            let (bad, bad_field, kind) = match (&ratio.errors, &ratio.good) {
                (Some(e), None) => (e, "errors", Bad::Errors as fn(String) -> Bad),
                (None, Some(g)) => (g, "good", Bad::Good as fn(String) -> Bad),
                _ => {
                    let why = "exactly one of errors and good";
                    return Err(vec![FieldError::new(format!("{field}.ratio"), why)]);
                }
            };
            let bad_field = format!("{field}.ratio.{bad_field}.metric");
            let bad_sel = selector(&bad_field, bad);
            let total = selector(&format!("{field}.ratio.total.metric"), &ratio.total);
            match (bad_sel, total) {
                (Ok(b), Ok(t)) => {
                    let total_field = format!("{field}.ratio.total.metric");
                    narrower((&bad_field, &total_field), &b.terms, &t.terms)
                        .map_err(|e| vec![e])?;
                    Ok(Indicator::Counters {
                        bad: kind(b.text),
                        total: t.text,
                        scoped: b.scoped && t.scoped,
                        workload: b.workload || t.workload,
                    })
                }
                (b, t) => Err(b.err().into_iter().chain(t.err()).collect()),
            }
        }
        (None, Some(ratio)) => {
            let f = format!("{field}.errorRatio.query");
            let template = QueryTemplate::compile(&ratio.query)
                .map_err(|why| vec![FieldError::new(&f, why)])?;
            // The period's ratio is the service's: CI's facts could make its errors match
            // nothing, and a workload would name only the canary.
            match ["release", "version", "canary", "primary", "workload"]
                .into_iter()
                .find(|p| template.uses(p))
            {
                Some(fact) => Err(vec![FieldError::new(
                    f,
                    format!(
                        "may not use {{{{{fact}}}}}: the error ratio is the whole service's over the period"
                    ),
                )]),
                None => Ok(Indicator::ErrorRatio(template)),
            }
        }
        _ => Err(vec![FieldError::new(
            field,
            "exactly one of ratio and errorRatio",
        )]),
    }
}

/// A counter selector as compiled: its text, its terms, and how it uses `{{workload}}`.
struct Counter {
    text: String,
    terms: std::collections::BTreeSet<String>,
    scoped: bool,
    workload: bool,
}

/// A counter selector, checked to be one plain selector on one line (so no comment can end
/// it early) that also reads as one once the operator's `increase(...[window])` is around
/// it, and naming no fact CI writes: a version that matches no error series must not make
/// the errors vanish.
fn selector(field: &str, spec: &EventSelector) -> Result<Counter, FieldError> {
    let refuse = |why: String| FieldError::new(field, why);
    if spec.metric.contains(['\n', '\r']) {
        return Err(refuse("must be one line".into()));
    }
    let template = QueryTemplate::compile(&spec.metric).map_err(refuse)?;
    let Some(terms) = template.selector_terms() else {
        let why = "must be one selector such as http_requests_total{code=~\"5..\"}, without functions, ranges, offset, @ or or; the operator counts it over its windows";
        return Err(FieldError::new(field, why));
    };
    if let Some(fact) = ["release", "version", "canary", "primary"]
        .into_iter()
        .find(|p| template.uses(p))
    {
        let why = format!(
            "may not use {{{{{fact}}}}}: a counter selects by what the stage is, not by what CI names; use {{{{workload}}}} for the workload measured"
        );
        return Err(FieldError::new(field, why));
    }
    QueryTemplate::compile(&counting_query(&spec.metric, Duration::from_secs(60), true))
        .map_err(|why| refuse(format!("does not read as a selector once counted: {why}")))?;
    Ok(Counter {
        text: spec.metric.clone(),
        terms: terms.clone(),
        scoped: template.pins_everywhere("workload"),
        workload: template.uses("workload"),
    })
}

/// Refuses bad (or good) events that are not a subset of all events: the same metric, with
/// every matcher of `total` and perhaps more. Else a typo, or a label total lacks, would
/// count no bad events against real traffic, and pass.
fn narrower(
    (field, total_field): (&str, &str),
    bad: &std::collections::BTreeSet<String>,
    total: &std::collections::BTreeSet<String>,
) -> Result<(), FieldError> {
    let missing: Vec<&String> = total.difference(bad).collect();
    let named = total.iter().any(|t| t.starts_with("__name__=\""));
    match (named, missing.is_empty()) {
        (true, true) => Ok(()),
        (false, _) => Err(FieldError::new(
            total_field,
            "must name its metric, e.g. http_requests_total{...}",
        )),
        (true, false) => {
            let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            let why = format!(
                "must select a subset of total's series: the same metric with all of total's matchers and more; it lacks {}",
                missing.join(", ")
            );
            Err(FieldError::new(field, why))
        }
    }
}

/// The `slo` kind, as registered in [`super::KINDS`]: it needs the Secrets it names.
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Slo
    }
    fn destination(&self, spec: &crate::api::GateSpec) -> Option<(&'static str, String)> {
        let server = spec.slo.as_ref().map(|g| &g.server);
        super::prom_client::destination(server, "spec.slo.address")
    }
    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.slo.is_some()
    }
    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        env: &super::GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let settings = super::settings(spec.slo.as_ref(), self.gate_type())?;
        let check = SloCheck::compile(settings, env)?;
        Ok((Box::new(check), super::prom_client::needs(&settings.server)))
    }
}
