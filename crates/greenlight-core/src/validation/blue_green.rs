//! Blue-green, compiled to the steps the canary machine already runs safely: the checks and
//! the analysis of the preview at no traffic, a pause when promotion waits, a switch of all
//! traffic, the post-promotion analysis while the previous release stays warm, and the
//! scale-down delay. What follows (the primary taking the release, traffic back on it, the
//! spare stack drained) is the canary's promotion.

use std::time::Duration;

use super::{
    AnalysisPlan, CanaryPlan, CanaryStepPlan, FieldError, LONGEST_SCALE_DOWN_DELAY,
    compile_analysis, routing_errors,
};
use crate::api::blue_green::BlueGreenStrategy;
use crate::api::canary::{FailurePolicy, ServiceSwitchRouting, TrafficRouting};
use crate::schedule::parse_duration;

const FIELD: &str = "spec.strategy.blueGreen";

pub fn compile_blue_green(spec: &BlueGreenStrategy) -> Result<CanaryPlan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let analysis = |name: &str, errors: &mut Vec<FieldError>| {
        let field = format!("{FIELD}.{name}");
        let spec = match name {
            "prePromotionAnalysis" => spec.pre_promotion_analysis.as_ref(),
            _ => spec.post_promotion_analysis.as_ref(),
        }?;
        compile_analysis(&field, spec, 1)
            .map_err(|mut e| errors.append(&mut e))
            .ok()
    };
    let pre = analysis("prePromotionAnalysis", &mut errors);
    let post = analysis("postPromotionAnalysis", &mut errors);
    let after = duration(
        "autoPromotionAfter",
        spec.auto_promotion_after.as_deref(),
        &mut errors,
    );
    if after.is_some() && !spec.auto_promotion {
        let why = "set, but autoPromotion is false: promotion waits for a person";
        errors.push(FieldError::new(format!("{FIELD}.autoPromotionAfter"), why));
    }
    let delay = duration(
        "scaleDownDelay",
        spec.scale_down_delay.as_deref(),
        &mut errors,
    );
    if delay.is_some_and(|d| d > LONGEST_SCALE_DOWN_DELAY) {
        errors.push(FieldError::new(
            format!("{FIELD}.scaleDownDelay"),
            "must be at most 1h",
        ));
    }
    let routing = routing(spec.traffic_routing.as_ref(), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let scale_down_delay = delay.unwrap_or(Duration::from_secs(30));
    let steps = steps(spec, pre, post, after, scale_down_delay);
    Ok(CanaryPlan {
        switch_step: steps
            .iter()
            .position(|s| *s == CanaryStepPlan::SetWeight(100)),
        steps,
        background: None,
        max_weight: 100,
        bake: Duration::ZERO,
        routing: Some(routing),
        on_failure: FailurePolicy::Rollback,
        scale_down_delay,
    })
}

/// The preview's checks and analysis, the wait for promotion, the switch, the post-promotion
/// analysis and the time the previous release stays warm after it.
fn steps(
    spec: &BlueGreenStrategy,
    pre: Option<AnalysisPlan>,
    post: Option<AnalysisPlan>,
    after: Option<Duration>,
    scale_down_delay: Duration,
) -> Vec<CanaryStepPlan> {
    let mut steps = Vec::new();
    if !spec.pre_promotion.is_empty() {
        steps.push(CanaryStepPlan::Checks);
    }
    steps.extend(pre.map(CanaryStepPlan::Analysis));
    match (spec.auto_promotion, after) {
        (false, _) => steps.push(CanaryStepPlan::Pause(None)),
        (true, Some(after)) => steps.push(CanaryStepPlan::Pause(Some(after))),
        (true, None) => {}
    }
    steps.push(CanaryStepPlan::SetWeight(100));
    steps.extend(post.map(CanaryStepPlan::Analysis));
    if !scale_down_delay.is_zero() {
        steps.push(CanaryStepPlan::Pause(Some(scale_down_delay)));
    }
    steps
}

fn duration(name: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Duration> {
    let parsed = value.map(parse_duration).transpose();
    parsed
        .map_err(|e| errors.push(FieldError::new(format!("{FIELD}.{name}"), e.to_string())))
        .ok()
        .flatten()
}

/// The routing asked for, or the `-active` Service's selector when none is.
fn routing(routing: Option<&TrafficRouting>, errors: &mut Vec<FieldError>) -> TrafficRouting {
    let switch = TrafficRouting {
        service_switch: Some(ServiceSwitchRouting {}),
        ..TrafficRouting::default()
    };
    let Some(routing) = routing else {
        return switch;
    };
    let gateway = routing.gateway_api.is_some().then_some(routing);
    for e in routing_errors(gateway) {
        let field = e.field.replace("spec.strategy.canary", FIELD);
        errors.push(FieldError::new(field, e.message));
    }
    if routing.gateway_api.is_some() && routing.service_switch.is_some() {
        let why = "set one of gatewayAPI or serviceSwitch";
        errors.push(FieldError::new(format!("{FIELD}.trafficRouting"), why));
    }
    match routing.gateway_api.is_some() {
        true => routing.clone(),
        false => switch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::canary::Analysis;

    fn analysis(gate: &str) -> Option<Analysis> {
        Some(Analysis {
            gates: vec![gate.into()],
            interval: Some("10s".into()),
            ..Analysis::default()
        })
    }

    fn kinds(plan: &CanaryPlan) -> Vec<String> {
        let kind = |s: &CanaryStepPlan| match s {
            CanaryStepPlan::Checks => "checks".to_string(),
            CanaryStepPlan::Analysis(a) => format!("analysis {}", a.gates[0]),
            CanaryStepPlan::Pause(None) => "pause".into(),
            CanaryStepPlan::Pause(Some(d)) => format!("pause {}s", d.as_secs()),
            CanaryStepPlan::SetWeight(w) => format!("weight {w}"),
        };
        plan.steps.iter().map(kind).collect()
    }

    #[test]
    fn the_preview_is_checked_before_the_switch_and_watched_after_it() {
        let spec = BlueGreenStrategy {
            pre_promotion: vec!["smoke".into()],
            pre_promotion_analysis: analysis("preview-errors"),
            post_promotion_analysis: analysis("errors"),
            ..BlueGreenStrategy::default()
        };
        let plan = compile_blue_green(&spec).unwrap();
        assert_eq!(
            kinds(&plan),
            [
                "checks",
                "analysis preview-errors",
                "weight 100",
                "analysis errors",
                "pause 30s"
            ]
        );
        assert!(plan.routing.unwrap().service_switch.is_some());
        assert_eq!(plan.scale_down_delay, Duration::from_secs(30));
    }

    #[test]
    fn promotion_waits_for_a_person_or_for_a_time_when_asked_to() {
        let by_hand = BlueGreenStrategy {
            auto_promotion: false,
            scale_down_delay: Some("0s".into()),
            ..BlueGreenStrategy::default()
        };
        assert_eq!(
            kinds(&compile_blue_green(&by_hand).unwrap()),
            ["pause", "weight 100"]
        );
        let later = BlueGreenStrategy {
            auto_promotion_after: Some("2m".into()),
            ..BlueGreenStrategy::default()
        };
        let plan = compile_blue_green(&later).unwrap();
        assert_eq!(kinds(&plan), ["pause 120s", "weight 100", "pause 30s"]);
    }

    #[test]
    fn contradictory_or_unbounded_settings_are_refused_naming_the_field() {
        let spec = BlueGreenStrategy {
            auto_promotion: false,
            auto_promotion_after: Some("2m".into()),
            scale_down_delay: Some("2h".into()),
            traffic_routing: Some(TrafficRouting {
                gateway_api: Some(crate::api::canary::GatewayApiRouting {
                    http_route: " ".into(),
                }),
                service_switch: Some(ServiceSwitchRouting {}),
            }),
            ..BlueGreenStrategy::default()
        };
        let fields: Vec<String> = compile_blue_green(&spec)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.strategy.blueGreen.autoPromotionAfter",
                "spec.strategy.blueGreen.scaleDownDelay",
                "spec.strategy.blueGreen.trafficRouting.gatewayAPI.httpRoute",
                "spec.strategy.blueGreen.trafficRouting",
            ]
        );
    }
}
