//! `kubectl greenlight dora`: the DORA figures of each pipeline and its stages as a table,
//! with the band of each figure and the causes of failures.

use greenlight_core::dora::{Band, Figures, PipelineReport, Spread};

/// `45s`, `12m`, `6h30m`, `3d4h`: short, and exact enough to compare with a dashboard.
fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn band(b: Option<Band>) -> String {
    b.map(|b| format!("{b:?}").to_lowercase())
        .unwrap_or_default()
}

fn spread(s: Option<Spread>) -> String {
    s.map(|s| format!("{}/{}", span(s.p50), span(s.p90)))
        .unwrap_or_else(|| "-".into())
}

fn percent(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// One row: the figures of a pipeline (its production stages) or of one stage.
fn row(name: &str, f: &Figures) -> String {
    let b = &f.bands;
    let cells = [
        format!("{name:<18}"),
        format!(
            "{:>5.2} {:<7}",
            f.deployments_per_day,
            band(b.deployment_frequency)
        ),
        format!("{:>3}/{:<3}", f.deployments, f.failures),
        format!(
            "{:>13} {:<7}",
            spread(f.lead_time_seconds),
            band(b.lead_time)
        ),
        format!(
            "{:>5} {:<7}",
            percent(f.change_failure_rate),
            band(b.change_failure_rate)
        ),
        format!(
            "{:>13} {:<7}",
            spread(f.time_to_restore_seconds),
            band(b.time_to_restore)
        ),
        format!("{:>5}", percent(f.rework_rate)),
    ];
    cells.join("  ").trim_end().to_string() + "\n"
}

/// The report as a table per pipeline; `days` names the period it covers.
pub fn text(reports: &[PipelineReport], period: &str) -> String {
    let mut out = String::new();
    for r in reports {
        let production = r.production.join(", ");
        out.push_str(&format!(
            "PIPELINE {} (namespace {}), last {period}; production: {production}\n",
            r.pipeline, r.namespace
        ));
        out.push_str(
            "                    DEPLOYS/DAY    OK/FAIL  LEAD TIME p50/p90      CHANGE FAIL    TIME TO RESTORE        REWORK\n",
        );
        out.push_str(&row("pipeline", &r.figures));
        for s in &r.stages {
            out.push_str(&row(&format!("  {}", s.stage), &s.figures));
        }
        let causes: Vec<String> = r
            .figures
            .failure_causes
            .iter()
            .map(|c| match &c.gate {
                Some(g) => format!("{} (gate {g}) x{}", c.reason, c.count),
                None => format!("{} x{}", c.reason, c.count),
            })
            .collect();
        if !causes.is_empty() {
            out.push_str(&format!(
                "failure causes in production: {}\n",
                causes.join(", ")
            ));
        }
        if r.reviews_open > 0 {
            out.push_str(&format!(
                "emergency reviews open: {} ({} overdue); see kubectl greenlight reviews\n",
                r.reviews_open, r.reviews_overdue
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_kubectl_ages_with_minutes_kept_for_hours() {
        assert_eq!(span(59), "59s");
        assert_eq!(span(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(span(3 * 86_400 + 7200), "3d2h");
    }

    #[test]
    fn a_pipeline_without_rollouts_shows_dashes_not_zeros() {
        let report = PipelineReport {
            namespace: "shop".into(),
            pipeline: "web".into(),
            production: vec!["prod".into()],
            figures: Figures::default(),
            stages: vec![],
            changes: vec![],
            reviews_open: 0,
            reviews_overdue: 0,
        };
        let table = text(&[report], "90d");
        assert!(table.contains("PIPELINE web (namespace shop), last 90d; production: prod"));
        let line = table.lines().find(|l| l.starts_with("pipeline")).unwrap();
        assert!(line.contains("  -  ") || line.contains(" - "), "{line}");
        assert!(!line.contains("elite"));
    }
}
