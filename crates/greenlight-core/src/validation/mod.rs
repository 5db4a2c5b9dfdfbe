//! The controller's own validation, for when no admission webhook runs: each spec is turned
//! into a compiled plan (what the machine runs) or into errors that name the field.

pub mod blue_green;
pub mod checks;
pub mod emergency;
pub mod names;
pub mod policy;

use std::fmt;
use std::time::Duration;

use regex::Regex;

use crate::api::canary::{
    Analysis, CanaryStrategy, FailureCounting, FailurePolicy, InconclusiveTimeoutPolicy,
    TrafficRouting,
};
use crate::api::patterns::{DIGEST_PATTERN, NAME_PATTERN, VERSION_PATTERN};
use crate::api::release::ReleaseSpec;
use crate::api::stage::{ActiveRollout, StageSpec, StrategyType, TriggerType, WindowKind};
use crate::schedule::{Schedule, WindowSpec, parse_duration, parse_window_length, time_zone};
pub use checks::ChecksPlan;
pub use policy::PolicyPlan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All field errors of one object, shown as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<FieldError>);

pub fn validate_release(spec: &ReleaseSpec) -> Result<(), ValidationErrors> {
    let digest = Regex::new(DIGEST_PATTERN).expect("constant pattern");
    let name = Regex::new(NAME_PATTERN).expect("constant pattern");
    let mut errors = Vec::new();
    if !name.is_match(&spec.pipeline) {
        errors.push(FieldError::new(
            "spec.pipeline",
            format!("'{}' is not a DNS label", spec.pipeline),
        ));
    }
    if spec.version.trim().is_empty() {
        errors.push(FieldError::new("spec.version", "must not be empty"));
    } else if !Regex::new(VERSION_PATTERN)
        .expect("constant pattern")
        .is_match(&spec.version)
        || spec.version.len() > 128
    {
        errors.push(FieldError::new(
            "spec.version",
            "only letters, digits and . _ + - are allowed, starting with a letter or digit, at most 128",
        ));
    }
    if spec.artifacts.is_empty() {
        errors.push(FieldError::new(
            "spec.artifacts",
            "at least one artifact is required",
        ));
    }
    for (i, a) in spec.artifacts.iter().enumerate() {
        if !digest.is_match(&a.image) {
            errors.push(FieldError::new(
                format!("spec.artifacts[{i}].image"),
                format!(
                    "'{}' is not pinned by digest; use <repository>@sha256:<64 hex digits>",
                    a.image
                ),
            ));
        }
        if spec.artifacts[..i].iter().any(|b| b.name == a.name) {
            errors.push(FieldError::new(
                format!("spec.artifacts[{i}].name"),
                format!("container '{}' is listed twice", a.name),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// What a `manual` stage is told when it has no approval gate.
pub const MANUAL_NEEDS_APPROVAL_GATE: &str =
    "'manual' promotes only through an approval gate: list a Gate of type approval in spec.gates";

/// A Stage spec with every string parsed.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub requires: Vec<String>,
    pub trigger: CompiledTrigger,
    pub windows: Vec<WindowSpec>,
    pub gates: Vec<String>,
    pub progress_deadline: Duration,
    pub replicas: i32,
    pub history_limit: usize,
    /// Set for the canary strategy.
    pub canary: Option<CanaryPlan>,
    /// What runs before the rollout, before promotion and after it.
    pub checks: ChecksPlan,
    /// The release policies, in their order; each holds the plan for its releases.
    pub policies: Vec<PolicyPlan>,
    /// How soon a failed rollout must be rolled back (a policy's `timeToRecover`).
    pub time_to_recover: Option<Duration>,
    /// What an approved emergency rolls out under, when the stage takes emergencies.
    pub emergency: Option<Box<emergency::EmergencyPlan>>,
}

impl StagePlan {
    /// The gates of one list, in their order.
    pub fn gates_in(&self, list: crate::api::gate::GateList) -> &[String] {
        match list {
            crate::api::gate::GateList::Gates => &self.gates,
            other => self.checks.gates_in(other),
        }
    }

    /// The policy that applies to a release of this type, if one does.
    pub fn policy_for(
        &self,
        release_type: crate::api::release::ReleaseType,
    ) -> Option<&PolicyPlan> {
        self.policies
            .iter()
            .find(|p| p.types.contains(&release_type))
    }

    /// The plan for a release of this type: its policy's, or the stage's own.
    pub fn for_type(&self, release_type: crate::api::release::ReleaseType) -> &StagePlan {
        self.policy_for(release_type).map_or(self, |p| &p.plan)
    }

    /// The policy of this name, if the spec still has it.
    pub fn policy_named(&self, name: &str) -> Option<&PolicyPlan> {
        self.policies.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone)]
pub enum CompiledTrigger {
    Auto,
    /// Like `Auto`, but the stage's gates include an approval gate that holds every release.
    Manual,
    Schedule {
        schedule: Schedule,
        tz: jiff::tz::TimeZone,
    },
}

pub fn compile_stage(name: &str, spec: &StageSpec) -> Result<StagePlan, ValidationErrors> {
    let mut errors = Vec::new();
    let trigger = compile_trigger(spec, &mut errors);
    let windows = compile_windows(spec, &mut errors);
    let progress_deadline = match parse_duration(&spec.progress_deadline) {
        Ok(d) if d >= Duration::from_secs(1) => Some(d),
        Ok(_) => {
            errors.push(FieldError::new(
                "spec.progressDeadline",
                "must be at least 1s",
            ));
            None
        }
        Err(e) => {
            errors.push(FieldError::new("spec.progressDeadline", e.to_string()));
            None
        }
    };
    if spec.requires.iter().any(|r| r == name) {
        errors.push(FieldError::new(
            "spec.requires",
            format!("stage '{name}' cannot require itself"),
        ));
    }
    names::check(name, &spec.target.name, &mut errors);
    // `emergency:<stage>` names a stage's emergency approvals inside the operator; a spec
    // that lists it would borrow another stage's rules.
    for (field, gate) in spec
        .named_gates()
        .into_iter()
        .filter(|(_, g)| g.contains(':'))
    {
        errors.push(FieldError::new(
            field,
            format!("'{gate}' is not a Gate's name"),
        ));
    }
    if spec.replicas < 0 {
        errors.push(FieldError::new("spec.replicas", "must not be negative"));
    }
    let checks = checks::compile_checks(spec, &mut errors);
    let canary = compile_strategy(spec, &mut errors);
    let (Some(trigger), Some(progress_deadline), true) =
        (trigger, progress_deadline, errors.is_empty())
    else {
        return Err(ValidationErrors(errors));
    };
    let mut plan = StagePlan {
        requires: spec.requires.clone(),
        trigger,
        windows,
        gates: spec.gates.clone(),
        progress_deadline,
        replicas: spec.replicas,
        history_limit: spec.history_limit.clamp(1, 100) as usize,
        canary,
        checks,
        policies: vec![],
        time_to_recover: None,
        emergency: None,
    };
    plan.emergency = emergency::compile_emergency(name, spec, &plan, &mut errors);
    plan.policies = policy::compile_policies(name, spec, &plan, &mut errors);
    match errors.is_empty() {
        true => Ok(plan),
        false => Err(ValidationErrors(errors)),
    }
}

/// What a rollback needs when the spec stopped compiling (or stopped being trusted)
/// mid-rollout: the replicas and traffic routing recorded when the rollout started, nothing
/// from the spec. The rollout in progress is rolled back with it, so a bad edit never leaves
/// a canary serving.
pub fn rollback_plan(rollout: &ActiveRollout, fallback_replicas: i32) -> StagePlan {
    let canary = rollout.canary.as_ref().map(|_| CanaryPlan {
        steps: vec![],
        background: None,
        max_weight: 100,
        bake: Duration::ZERO,
        routing: rollout.routing.clone(),
        on_failure: FailurePolicy::Rollback,
        scale_down_delay: Duration::from_secs(if rollout.routing.is_some() { 30 } else { 0 }),
        switch_step: None,
    });
    StagePlan {
        requires: vec![],
        trigger: CompiledTrigger::Auto,
        windows: vec![],
        gates: vec![],
        progress_deadline: Duration::from_secs(600),
        replicas: rollout
            .replicas
            .unwrap_or(fallback_replicas)
            .clamp(0, 10_000),
        history_limit: 10,
        canary,
        // A rollback runs no checks.
        checks: ChecksPlan::default(),
        policies: vec![],
        time_to_recover: None,
        emergency: None,
    }
}

fn compile_trigger(spec: &StageSpec, errors: &mut Vec<FieldError>) -> Option<CompiledTrigger> {
    match spec.trigger.trigger_type {
        TriggerType::Auto => Some(CompiledTrigger::Auto),
        TriggerType::Manual if spec.gates.is_empty() => {
            errors.push(FieldError::new(
                "spec.trigger.type",
                MANUAL_NEEDS_APPROVAL_GATE,
            ));
            None
        }
        TriggerType::Manual => Some(CompiledTrigger::Manual),
        TriggerType::Schedule => {
            let tz = time_zone(spec.trigger.time_zone.as_deref())
                .map_err(|e| errors.push(FieldError::new("spec.trigger.timeZone", e.to_string())))
                .ok();
            let schedule = match spec.trigger.schedule.as_deref() {
                None => {
                    errors.push(FieldError::new(
                        "spec.trigger.schedule",
                        "required when spec.trigger.type is 'schedule'",
                    ));
                    None
                }
                Some(expr) => Schedule::parse(expr)
                    .map_err(|e| {
                        errors.push(FieldError::new("spec.trigger.schedule", e.to_string()))
                    })
                    .ok(),
            };
            schedule
                .zip(tz)
                .map(|(schedule, tz)| CompiledTrigger::Schedule { schedule, tz })
        }
    }
}

fn compile_windows(spec: &StageSpec, errors: &mut Vec<FieldError>) -> Vec<WindowSpec> {
    let mut windows = Vec::new();
    for (i, w) in spec.windows.iter().enumerate() {
        let field = |f: &str| format!("spec.windows[{i}].{f}");
        let schedule = Schedule::parse(&w.schedule)
            .map_err(|e| errors.push(FieldError::new(field("schedule"), e.to_string())))
            .ok();
        let duration = parse_window_length(&w.duration)
            .map_err(|e| errors.push(FieldError::new(field("duration"), e)))
            .ok();
        let tz = time_zone(w.time_zone.as_deref())
            .map_err(|e| errors.push(FieldError::new(field("timeZone"), e.to_string())))
            .ok();
        if let (Some(schedule), Some(duration), Some(tz)) = (schedule, duration, tz) {
            windows.push(WindowSpec {
                allow: w.kind == WindowKind::Allow,
                schedule,
                duration,
                tz,
                reason: w.reason.clone().unwrap_or_else(|| w.schedule.clone()),
            });
        }
    }
    windows
}

fn compile_strategy(spec: &StageSpec, errors: &mut Vec<FieldError>) -> Option<CanaryPlan> {
    let (kind, blue_green) = (spec.strategy.strategy_type, &spec.strategy.blue_green);
    if blue_green.is_some() && kind != StrategyType::BlueGreen {
        let why = "set, but spec.strategy.type is not 'blueGreen'";
        errors.push(FieldError::new("spec.strategy.blueGreen", why));
    }
    if spec.strategy.canary.is_some() && kind == StrategyType::BlueGreen {
        let why = "set, but spec.strategy.type is 'blueGreen'";
        errors.push(FieldError::new("spec.strategy.canary", why));
        return None;
    }
    match (spec.strategy.strategy_type, &spec.strategy.canary) {
        (StrategyType::Rolling, None) => None,
        (StrategyType::Rolling, Some(_)) => {
            errors.push(FieldError::new(
                "spec.strategy.canary",
                "set, but spec.strategy.type is 'rolling'",
            ));
            None
        }
        (StrategyType::Canary, None) => {
            errors.push(FieldError::new(
                "spec.strategy.canary",
                "required when spec.strategy.type is 'canary'",
            ));
            None
        }
        (StrategyType::Canary, Some(c)) => compile_canary(c)
            .map_err(|mut e| errors.append(&mut e))
            .ok(),
        (StrategyType::BlueGreen, _) => {
            let spec = spec.strategy.blue_green.clone().unwrap_or_default();
            blue_green::compile_blue_green(&spec)
                .map_err(|mut e| errors.append(&mut e))
                .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::release::{Artifact, ReleaseType};
    use crate::api::stage::{Strategy, TargetRef, Trigger, Window};

    fn release(image: &str) -> ReleaseSpec {
        ReleaseSpec {
            pipeline: "shop".into(),
            version: "1.0.0".into(),
            artifacts: vec![Artifact {
                name: "web".into(),
                image: image.into(),
            }],
            release_type: ReleaseType::Feature,
            source: None,
            notes: None,
            change_ticket: None,
            created_by: None,
        }
    }

    fn stage() -> StageSpec {
        StageSpec {
            pipeline: "shop".into(),
            requires: vec![],
            target: TargetRef { name: "web".into() },
            replicas: 1,
            trigger: Trigger::default(),
            gates: vec![],
            pre_rollout: vec![],
            verify: None,
            notifiers: vec![],
            windows: vec![],
            strategy: Strategy::default(),
            progress_deadline: "10m".into(),
            history_limit: 10,
            protected: false,
            policies: vec![],
            emergency: None,
        }
    }

    #[test]
    fn a_release_without_a_digest_is_rejected_naming_the_field() {
        let err = validate_release(&release("registry.example/web:1.0"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.artifacts[0].image") && err.contains("digest"),
            "{err}"
        );
        let digest = format!("registry.example/web@sha256:{}", "a".repeat(64));
        assert!(validate_release(&release(&digest)).is_ok());
    }

    #[test]
    fn an_unparsable_cron_names_the_field() {
        let mut s = stage();
        s.trigger = Trigger {
            trigger_type: TriggerType::Schedule,
            schedule: Some("0 25 * * *".into()),
            time_zone: None,
        };
        s.windows.push(Window {
            kind: WindowKind::Deny,
            schedule: "bad".into(),
            duration: "1h".into(),
            time_zone: Some("Mars/Olympus".into()),
            reason: None,
        });
        let err = compile_stage("prod", &s).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.trigger.schedule",
                "spec.windows[0].schedule",
                "spec.windows[0].timeZone"
            ]
        );
    }

    #[test]
    fn a_window_of_no_length_is_refused_naming_its_field() {
        let mut s = stage();
        s.windows.push(Window {
            kind: WindowKind::Allow,
            schedule: "0 8 * * 1-5".into(),
            duration: "0s".into(),
            time_zone: None,
            reason: None,
        });
        let err = compile_stage("prod", &s).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.windows[0].duration: '0s' is no length"),
            "{err}"
        );
    }

    #[test]
    fn a_schedule_trigger_needs_a_schedule() {
        let mut s = stage();
        s.trigger.trigger_type = TriggerType::Schedule;
        let err = compile_stage("prod", &s).unwrap_err().to_string();
        assert!(err.contains("spec.trigger.schedule: required"), "{err}");
    }
}

/// A canary strategy with every duration parsed and every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryPlan {
    pub steps: Vec<CanaryStepPlan>,
    pub background: Option<AnalysisPlan>,
    pub max_weight: i32,
    pub bake: Duration,
    /// How traffic is split; the operator's `routers::for_routing` picks the router for it.
    pub routing: Option<TrafficRouting>,
    pub on_failure: FailurePolicy,
    /// How long a side keeps its pods once traffic has left it (zero without a router).
    pub scale_down_delay: Duration,
    /// Blue-green's switch of all traffic: a promote by hand goes on to it, never past it,
    /// so the primary never takes the release while it serves.
    pub switch_step: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CanaryStepPlan {
    SetWeight(i32),
    /// The `prePromotion` checks, run here rather than just before promotion (blue-green's
    /// preview, before the switch).
    Checks,
    Pause(Option<Duration>),
    Analysis(AnalysisPlan),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisPlan {
    pub gates: Vec<String>,
    pub interval: Duration,
    pub count: i32,
    pub failure_limit: i32,
    pub failure_counting: FailureCounting,
    pub inconclusive_limit: i32,
    pub on_inconclusive: FailurePolicy,
    pub initial_delay: Duration,
    pub inconclusive_timeout: Duration,
    pub on_inconclusive_timeout: InconclusiveTimeoutPolicy,
}

pub fn compile_canary(spec: &CanaryStrategy) -> Result<CanaryPlan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let max_weight = spec.max_weight.unwrap_or(100);
    if !(1..=100).contains(&max_weight) {
        errors.push(FieldError::new(
            "spec.strategy.canary.maxWeight",
            "must be within 1..100",
        ));
    }
    if spec.steps.is_empty() {
        errors.push(FieldError::new(
            "spec.strategy.canary.steps",
            "at least one step is required",
        ));
    }
    let steps = compile_steps(spec, max_weight, &mut errors);
    let background = match &spec.analysis {
        None => None,
        Some(a) => compile_analysis("spec.strategy.canary.analysis", a, i32::MAX)
            .map_err(|mut e| errors.append(&mut e))
            .ok(),
    };
    let bake = match spec.bake.as_deref().map(parse_duration).transpose() {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => {
            errors.push(FieldError::new("spec.strategy.canary.bake", e.to_string()));
            Duration::ZERO
        }
    };
    errors.extend(routing_errors(spec.traffic_routing.as_ref()));
    let routing = spec.traffic_routing.clone();
    if routing.as_ref().is_some_and(|r| r.service_switch.is_some()) {
        errors.push(FieldError::new(
            "spec.strategy.canary.trafficRouting.serviceSwitch",
            "switches all traffic at once, for spec.strategy.type 'blueGreen' only; a canary's shares need a splitter (gatewayAPI) or the replica ratio",
        ));
    }
    let scale_down_delay = scale_down_delay(spec, &mut errors);
    if errors.is_empty() {
        Ok(CanaryPlan {
            scale_down_delay: if routing.is_some() {
                scale_down_delay
            } else {
                Duration::ZERO
            },
            steps,
            background,
            max_weight,
            bake,
            routing,
            on_failure: spec.on_failure,
            switch_step: None,
        })
    } else {
        Err(errors)
    }
}

fn compile_steps(
    spec: &CanaryStrategy,
    max_weight: i32,
    errors: &mut Vec<FieldError>,
) -> Vec<CanaryStepPlan> {
    let mut steps = Vec::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let field = format!("spec.strategy.canary.steps[{i}]");
        let kinds = [
            step.set_weight.is_some(),
            step.pause.is_some(),
            step.analysis.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            errors.push(FieldError::new(
                &field,
                "set exactly one of setWeight, pause or analysis",
            ));
            continue;
        }
        if let Some(w) = step.set_weight {
            if !(0..=100).contains(&w) {
                errors.push(FieldError::new(
                    format!("{field}.setWeight"),
                    format!("{w} is outside 0..100"),
                ));
            } else if w > max_weight {
                errors.push(FieldError::new(
                    format!("{field}.setWeight"),
                    format!("{w} is above maxWeight {max_weight}"),
                ));
            }
            steps.push(CanaryStepPlan::SetWeight(w.clamp(0, 100)));
        } else if let Some(pause) = &step.pause {
            match pause.duration.as_deref().map(parse_duration).transpose() {
                Ok(d) => steps.push(CanaryStepPlan::Pause(d)),
                Err(e) => errors.push(FieldError::new(
                    format!("{field}.pause.duration"),
                    e.to_string(),
                )),
            }
        } else if let Some(analysis) = &step.analysis {
            match compile_analysis(&format!("{field}.analysis"), analysis, 1) {
                Ok(a) => steps.push(CanaryStepPlan::Analysis(a)),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    steps
}

/// The longest a side may keep its pods after traffic left it.
pub(crate) const LONGEST_SCALE_DOWN_DELAY: Duration = Duration::from_secs(3600);

/// The router fields the routers cannot do without. Routers are IO and live in the operator;
/// what their fields must hold is part of the spec, and so it is checked here. A test in the
/// operator's `routers` holds each router's own check to agree with this one.
pub fn routing_errors(routing: Option<&TrafficRouting>) -> Vec<FieldError> {
    let gateway = routing.and_then(|r| r.gateway_api.as_ref());
    match gateway.is_some_and(|g| g.http_route.trim().is_empty()) {
        true => vec![FieldError::new(
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute",
            "must name an HTTPRoute",
        )],
        false => vec![],
    }
}

fn scale_down_delay(spec: &CanaryStrategy, errors: &mut Vec<FieldError>) -> Duration {
    let field = "spec.strategy.canary.scaleDownDelay";
    match spec.scale_down_delay.as_deref().map(parse_duration) {
        None => Duration::from_secs(30),
        Some(Ok(d)) if d <= LONGEST_SCALE_DOWN_DELAY => d,
        Some(Ok(_)) => {
            errors.push(FieldError::new(field, "must be at most 1h"));
            Duration::ZERO
        }
        Some(Err(e)) => {
            errors.push(FieldError::new(field, e.to_string()));
            Duration::ZERO
        }
    }
}

pub(crate) fn compile_analysis(
    field: &str,
    spec: &Analysis,
    default_count: i32,
) -> Result<AnalysisPlan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut duration =
        |name: &str, value: Option<&str>, default: Duration, min: Duration| match value
            .map(parse_duration)
        {
            None => default,
            Some(Ok(d)) if d >= min => d,
            Some(Ok(_)) => {
                errors.push(FieldError::new(
                    format!("{field}.{name}"),
                    format!("must be at least {}s", min.as_secs()),
                ));
                default
            }
            Some(Err(e)) => {
                errors.push(FieldError::new(format!("{field}.{name}"), e.to_string()));
                default
            }
        };
    let interval = duration(
        "interval",
        spec.interval.as_deref(),
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let initial_delay = duration(
        "initialDelay",
        spec.initial_delay.as_deref(),
        Duration::ZERO,
        Duration::ZERO,
    );
    let inconclusive_timeout = duration(
        "inconclusiveTimeout",
        spec.inconclusive_timeout.as_deref(),
        Duration::from_secs(600),
        Duration::from_secs(1),
    );
    if spec.gates.is_empty() {
        errors.push(FieldError::new(
            format!("{field}.gates"),
            "at least one gate is required",
        ));
    }
    for (name, value) in [
        ("count", spec.count),
        ("failureLimit", spec.failure_limit),
        ("inconclusiveLimit", spec.inconclusive_limit),
    ] {
        if let Some(v) = value.filter(|v| !(1..=1000).contains(v)) {
            let why = format!("{v} is outside 1..1000");
            errors.push(FieldError::new(format!("{field}.{name}"), why));
        }
    }
    if errors.is_empty() {
        Ok(AnalysisPlan {
            gates: spec.gates.clone(),
            interval,
            count: spec.count.unwrap_or(default_count).max(1),
            failure_limit: spec.failure_limit.unwrap_or(1).max(1),
            failure_counting: spec.failure_counting,
            inconclusive_limit: spec.inconclusive_limit.unwrap_or(3).max(1),
            on_inconclusive: spec.on_inconclusive.into(),
            initial_delay,
            inconclusive_timeout,
            on_inconclusive_timeout: spec.on_inconclusive_timeout,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::api::canary::{Analysis, CanaryStep, PauseStep};
    use crate::api::release::{Artifact, ReleaseType};
    use crate::api::stage::{Strategy, TargetRef, Trigger, Window};

    fn junk() -> impl proptest::strategy::Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,24}",
            "[0-9*/,-]{1,4}( [0-9*/,a-z-]{1,5}){0,6}",
            "[0-9.]{0,6}(ms|s|m|h|d|x)?",
            "(<|>|<=|>=|==|!=|=<|~)? ?[-+0-9.eNaIf]{0,6}",
            Just(String::new()),
        ]
    }

    fn stage(
        cron: String,
        zone: String,
        duration: String,
        deadline: String,
        weight: i32,
    ) -> StageSpec {
        StageSpec {
            pipeline: "shop".into(),
            protected: false,
            policies: vec![],
            emergency: None,
            requires: vec![],
            target: TargetRef { name: "web".into() },
            replicas: 1,
            trigger: Trigger {
                trigger_type: TriggerType::Schedule,
                schedule: Some(cron.clone()),
                time_zone: Some(zone.clone()),
            },
            gates: vec![],
            pre_rollout: vec![],
            verify: None,
            notifiers: vec![],
            windows: vec![Window {
                kind: WindowKind::Deny,
                schedule: cron,
                duration: duration.clone(),
                time_zone: Some(zone),
                reason: None,
            }],
            strategy: Strategy {
                blue_green: None,
                strategy_type: StrategyType::Canary,
                canary: Some(CanaryStrategy {
                    steps: vec![
                        CanaryStep {
                            set_weight: Some(weight),
                            ..Default::default()
                        },
                        CanaryStep {
                            pause: Some(PauseStep {
                                duration: Some(duration.clone()),
                            }),
                            ..Default::default()
                        },
                        CanaryStep {
                            analysis: Some(Analysis {
                                gates: vec!["g".into()],
                                interval: Some(duration),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
            },
            progress_deadline: deadline,
            history_limit: 10,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Random and malformed Stages never panic the validation, and every error names a field.
        #[test]
        fn stage_validation_never_panics_and_names_the_field(
            cron in junk(), zone in junk(), duration in junk(), deadline in junk(), weight in -1000i32..1000,
        ) {
            if let Err(errors) = compile_stage("prod", &stage(cron, zone, duration, deadline, weight)) {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert!(e.field.starts_with("spec."), "{}", e);
                    prop_assert!(!e.message.is_empty(), "{}", e);
                }
            }
        }

        /// Random images and names never panic the Release validation; digests are required.
        #[test]
        fn release_validation_never_panics_and_requires_a_digest(image in junk(), pipeline in junk(), name in junk()) {
            let spec = ReleaseSpec {
                pipeline,
                version: "1".into(),
                artifacts: vec![Artifact { name, image: image.clone() }],
                release_type: ReleaseType::Feature,
                source: None,
                notes: None,
                change_ticket: None,
                created_by: None,
            };
            let result = validate_release(&spec);
            if !image.contains("@sha256:") {
                let errors = result.expect_err("an image without a digest is refused");
                prop_assert!(errors.0.iter().any(|e| e.field == "spec.artifacts[0].image"));
            }
        }
    }
}

#[cfg(test)]
mod routing_tests {
    use super::*;
    use crate::api::canary::GatewayApiRouting;

    fn gateway(route: &str) -> TrafficRouting {
        TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: route.to_string(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_blank_http_route_is_refused_naming_the_field_and_a_named_one_passes() {
        for blank in ["", " ", "\t\n"] {
            let errors = routing_errors(Some(&gateway(blank)));
            assert_eq!(errors.len(), 1, "{blank:?}");
            assert_eq!(
                errors[0].field,
                "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute"
            );
        }
        assert!(routing_errors(Some(&gateway("web"))).is_empty());
        assert!(routing_errors(None).is_empty());
    }
}
