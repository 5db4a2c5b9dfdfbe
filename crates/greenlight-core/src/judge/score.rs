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

/// The judgement of `comparisons`, each with its group and whether it is critical.
pub fn score(
    comparisons: Vec<(Comparison, String, bool)>,
    weights: &BTreeMap<String, f64>,
    thresholds: Thresholds,
) -> Judgement {
    let groups = group_scores(&comparisons);
    let critical = comparisons
        .iter()
        .find(|(c, _, critical)| *critical && c.class != Class::Pass);
    let no_data = comparisons
        .iter()
        .filter(|(c, ..)| c.class == Class::NoData)
        .count();
    let (score, verdict, reason) = match critical {
        Some((c, ..)) if c.class == Class::NoData => (
            0.0,
            Verdict::NoData,
            format!("critical metric {} has no data", c.metric),
        ),
        Some((c, ..)) => (
            0.0,
            Verdict::Fail,
            format!("critical metric {} is {:?}", c.metric, c.class),
        ),
        None if no_data as f64 >= NO_DATA_SHARE * comparisons.len() as f64 => {
            let reason = format!("{no_data} of {} metrics have no data", comparisons.len());
            (0.0, Verdict::NoData, reason)
        }
        None => {
            let score = weighted(&groups, weights);
            let verdict = match score {
                s if s >= thresholds.pass => Verdict::Pass,
                s if s >= thresholds.marginal => Verdict::Marginal,
                _ => Verdict::Fail,
            };
            let reason = format!(
                "score {score} (pass {}, marginal {})",
                thresholds.pass, thresholds.marginal
            );
            // Missing data never passes: a score that would pass with a metric unjudged
            // waits for that metric instead.
            let missing = comparisons.iter().find(|(c, ..)| c.class == Class::NoData);
            match (verdict, missing) {
                (Verdict::Pass, Some((c, ..))) => {
                    let why = format!("{reason}, but metric {} has no data", c.metric);
                    (score, Verdict::NoData, why)
                }
                _ => (score, verdict, reason),
            }
        }
    };
    Judgement {
        comparisons: comparisons.into_iter().map(|(c, ..)| c).collect(),
        groups,
        score,
        verdict,
        reason,
    }
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
