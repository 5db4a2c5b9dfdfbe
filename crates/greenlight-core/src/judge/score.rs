//! The score of a judgement: metrics grouped, each group's share of passing metrics, weighted
//! into 0..100, as Kayenta's weighted-sum scorer does, and the verdict its thresholds give.

use std::collections::BTreeMap;

use super::Thresholds;
use super::classify::{Class, Comparison};

/// What a judgement concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Between the marginal and the pass threshold: not enough to promote or to roll back.
    Marginal,
    Fail,
    /// Too little data to judge: a critical metric or half the metrics had none.
    NoData,
}

/// One group's share of passing metrics, 0..100.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupScore {
    pub group: String,
    pub score: f64,
    /// Whether none of the group's metrics had data (it then counts as 100).
    pub no_data: bool,
}

/// Every metric's comparison, the groups' scores, the score and the verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub comparisons: Vec<Comparison>,
    pub groups: Vec<GroupScore>,
    pub score: f64,
    pub verdict: Verdict,
    pub reason: String,
}

/// The share of metrics without data at which a judgement has no data.
const NO_DATA_SHARE: f64 = 0.5;

/// The judgement of `comparisons`, each with its group and whether it is critical. Evidence
/// of harm decides before missing data does: a critical metric that is High or Low, or a
/// failing score, fails even while other metrics have no data.
pub fn score(
    comparisons: Vec<(Comparison, String, bool)>,
    weights: &BTreeMap<String, f64>,
    thresholds: Thresholds,
) -> Judgement {
    let groups = group_scores(&comparisons);
    let (score, verdict, reason) = match critical_harm(&comparisons) {
        Some(reason) => (0.0, Verdict::Fail, reason),
        None => weighed(&comparisons, &groups, weights, thresholds),
    };
    Judgement {
        comparisons: comparisons.into_iter().map(|(c, ..)| c).collect(),
        groups,
        score,
        verdict,
        reason,
    }
}

/// Why a critical metric fails the judgement alone, if one is High or Low.
fn critical_harm(comparisons: &[(Comparison, String, bool)]) -> Option<String> {
    let harmed = |c: &Comparison| matches!(c.class, Class::High | Class::Low);
    let (c, ..) = comparisons
        .iter()
        .find(|(c, _, critical)| *critical && harmed(c))?;
    Some(format!("critical metric {} is {:?}", c.metric, c.class))
}

/// The weighted score and its verdict; where it does not fail, missing data (a critical
/// metric's, half the metrics', or any metric's under a passing score) makes it NoData.
fn weighed(
    comparisons: &[(Comparison, String, bool)],
    groups: &[GroupScore],
    weights: &BTreeMap<String, f64>,
    thresholds: Thresholds,
) -> (f64, Verdict, String) {
    let score = weighted(groups, weights);
    let verdict = match score {
        s if s >= thresholds.pass => Verdict::Pass,
        s if s >= thresholds.marginal => Verdict::Marginal,
        _ => Verdict::Fail,
    };
    let reason = format!(
        "score {score} (pass {}, marginal {})",
        thresholds.pass, thresholds.marginal
    );
    let missing: Vec<&(Comparison, String, bool)> = comparisons
        .iter()
        .filter(|(c, ..)| c.class == Class::NoData)
        .collect();
    let critical = missing.iter().find(|(_, _, critical)| *critical);
    let why = match (verdict, critical, missing.first()) {
        (Verdict::Fail, ..) | (_, _, None) => return (score, verdict, reason),
        (_, Some((c, ..)), _) => format!("critical metric {} has no data", c.metric),
        _ if missing.len() as f64 >= NO_DATA_SHARE * comparisons.len() as f64 => {
            format!(
                "{} of {} metrics have no data",
                missing.len(),
                comparisons.len()
            )
        }
        (Verdict::Pass, _, Some((c, ..))) => format!("metric {} has no data", c.metric),
        _ => return (score, verdict, reason),
    };
    (score, Verdict::NoData, format!("{reason}, but {why}"))
}

fn group_scores(comparisons: &[(Comparison, String, bool)]) -> Vec<GroupScore> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (c, group, _) in comparisons {
        let (pass, judged) = counts.entry(group.as_str()).or_default();
        *pass += usize::from(c.class == Class::Pass);
        *judged += usize::from(c.class != Class::NoData);
    }
    counts
        .into_iter()
        .map(|(group, (pass, judged))| GroupScore {
            group: group.to_string(),
            score: match judged {
                0 => 0.0,
                _ => 100.0 * pass as f64 / judged as f64,
            },
            no_data: judged == 0,
        })
        .collect()
}

/// Σ score × weight / 100, rounded to two decimals; groups without a weight share what the
/// weights leave of 100, and a group without data counts as 100.
fn weighted(groups: &[GroupScore], weights: &BTreeMap<String, f64>) -> f64 {
    let given: f64 = weights.values().sum();
    let unweighted = groups
        .iter()
        .filter(|g| !weights.contains_key(&g.group))
        .count();
    let share = match unweighted {
        0 => 0.0,
        n => (100.0 - given).max(0.0) / n as f64,
    };
    let total: f64 = groups
        .iter()
        .map(|g| {
            let score = if g.no_data { 100.0 } else { g.score };
            score * weights.get(&g.group).copied().unwrap_or(share) / 100.0
        })
        .sum();
    (total * 100.0).round() / 100.0
}
