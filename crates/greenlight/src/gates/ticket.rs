//! `changeTicket` gate: passes only while the change request the Release names is approved,
//! in its implement state, and now is inside its planned window, and only while no other
//! release went out under it. A change on its way (new, assessed, scheduled) or out of
//! its window holds the release; a closed or cancelled one fails it; no answer is
//! inconclusive.

use futures::future::BoxFuture;
use jiff::Timestamp;
use serde_json::Value;

use super::itsm::{Itsm, field};
use super::{GateCheck, GateContext, GateEnv, GateOutcome, timeout_field};
use crate::api::release::GateVerdict;
use crate::api::ticket::ChangeTicketGate;
use crate::validation::FieldError;

const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct TicketCheck {
    itsm: Itsm,
}

impl TicketCheck {
    pub fn compile(spec: &ChangeTicketGate, env: &GateEnv) -> Result<Itsm, Vec<FieldError>> {
        let mut errors = Vec::new();
        let base = match reqwest::Url::parse(&spec.url) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                let why = format!("scheme '{}' is not http or https", u.scheme());
                errors.push(FieldError::new("spec.changeTicket.url", why));
                None
            }
            Ok(u) => match env.webhook_allow.refusal(&u) {
                Some(why) => {
                    errors.push(FieldError::new("spec.changeTicket.url", why));
                    None
                }
                None => Some(u),
            },
            Err(e) => {
                let why = format!("'{}' is not a URL: {e}", spec.url);
                errors.push(FieldError::new("spec.changeTicket.url", why));
                None
            }
        };
        let credentials = spec.credentials.as_ref();
        if credentials.is_some_and(|c| c.basic.is_some() == c.oauth.is_some()) {
            let why = "set exactly one of basic and oauth";
            errors.push(FieldError::new("spec.changeTicket.credentials", why));
        }
        let timeout = timeout_field(
            "spec.changeTicket.timeout",
            spec.timeout.as_deref(),
            DEFAULT_TIMEOUT,
        )
        .map_err(|e| errors.push(e))
        .ok();
        match (base, timeout, errors.is_empty()) {
            (Some(base), Some(timeout), true) => Ok(Itsm {
                http: env.http.clone(),
                base,
                spec: spec.clone(),
                timeout,
            }),
            _ => Err(errors),
        }
    }

    async fn run(&self, ctx: &GateContext) -> GateOutcome {
        let Some(ticket) = ctx.change_ticket.as_deref() else {
            let why =
                "the release names no change ticket (spec.changeTicket); publish one that does";
            return GateOutcome::new(GateVerdict::Failed, why);
        };
        if !self.itsm.spec.allow_reuse && !ctx.ticket_used_by.is_empty() {
            let why = format!(
                "change {ticket} already let release {} out; a change is approved for one release (allowReuse lets it serve more)",
                ctx.ticket_used_by.join(", ")
            );
            return GateOutcome::new(GateVerdict::Failed, why).with_value(ticket);
        }
        match self.itsm.records(ticket, &ctx.secrets).await {
            Err(why) => GateOutcome::new(GateVerdict::Inconclusive, why),
            Ok(records) => {
                // An ITSM that ignores an unknown query field answers with other records.
                let records = self.numbered(records, ticket);
                match for_another_release(&self.itsm.spec, &records, ctx) {
                    Some(outcome) => outcome,
                    None => judge(&self.itsm.spec, ticket, &records, ctx.now),
                }
            }
        }
    }
}

impl TicketCheck {
    /// The records whose number field is the ticket.
    fn numbered(&self, records: Vec<Value>, ticket: &str) -> Vec<Value> {
        let number = &self.itsm.spec.fields.number;
        let mine = |r: &Value| field(r, number).as_deref() == Some(ticket);
        records.into_iter().filter(mine).collect()
    }
}

impl GateCheck for TicketCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(self.run(ctx))
    }
}

/// When the gate reads which release a change is for: a failure if it is not this one.
fn for_another_release(
    spec: &ChangeTicketGate,
    records: &[Value],
    ctx: &GateContext,
) -> Option<GateOutcome> {
    let name = spec.fields.release.as_deref()?;
    let [record] = records else {
        return None;
    };
    let named = field(record, name).unwrap_or_default();
    if named == ctx.release || named == ctx.version {
        return None;
    }
    let ticket = ctx.change_ticket.as_deref().unwrap_or_default();
    let why = format!(
        "change {ticket} is for release '{named}' ({name}), not {} ({})",
        ctx.release, ctx.version
    );
    Some(GateOutcome::new(GateVerdict::Failed, why))
}

/// The verdict on the change records found for `ticket`, at `now`.
pub fn judge(
    spec: &ChangeTicketGate,
    ticket: &str,
    records: &[Value],
    now: Timestamp,
) -> GateOutcome {
    let record = match records {
        [] => {
            let why = format!("change {ticket} is not in the ITSM (yet)");
            return GateOutcome::new(GateVerdict::Pending, why);
        }
        [record] => record,
        _ => {
            let why = format!("more than one change record is numbered {ticket}");
            return GateOutcome::new(GateVerdict::Inconclusive, why);
        }
    };
    let (fields, states) = (&spec.fields, &spec.states);
    let state = field(record, &fields.state).unwrap_or_default();
    let named = state_name(&state);
    if states.waiting.contains(&state) {
        let goal: Vec<String> = states.implement.iter().map(|s| state_name(s)).collect();
        let why = format!(
            "change {ticket} is in {named}; the release goes out in {}",
            goal.join(" or ")
        );
        return GateOutcome::new(GateVerdict::Pending, why).with_value(named);
    }
    if !states.implement.contains(&state) {
        let why =
            format!("change {ticket} is in {named}, neither being implemented nor on its way");
        return GateOutcome::new(GateVerdict::Failed, why).with_value(named);
    }
    let approval = field(record, &fields.approval).unwrap_or_default();
    if !spec.states.approved.contains(&approval) {
        let why = format!("change {ticket} is in {named} but its approval is '{approval}'");
        return GateOutcome::new(GateVerdict::Pending, why).with_value(named);
    }
    window(ticket, record, spec, now).with_value(named)
}

/// Passed inside the change's planned window; held before and after it.
fn window(ticket: &str, record: &Value, spec: &ChangeTicketGate, now: Timestamp) -> GateOutcome {
    let fields = &spec.fields;
    let (start, end) = (
        planned(record, &fields.planned_start),
        planned(record, &fields.planned_end),
    );
    let (Some(start), Some(end)) = (start, end) else {
        let why = format!(
            "change {ticket} has no readable planned window ({}, {})",
            fields.planned_start, fields.planned_end
        );
        return GateOutcome::new(GateVerdict::Inconclusive, why);
    };
    if now < start {
        let why = format!("change {ticket} is approved; its planned window opens at {start}");
        return GateOutcome::new(GateVerdict::Pending, why).recheck_at(start);
    }
    if now >= end {
        let why = format!(
            "change {ticket}'s planned window ended at {end}; reschedule the change to let the release out"
        );
        return GateOutcome::new(GateVerdict::Pending, why);
    }
    let why =
        format!("change {ticket} is approved and being implemented, in its window until {end}");
    GateOutcome::new(GateVerdict::Passed, why)
}

/// A planned time: ServiceNow's `YYYY-MM-DD HH:MM:SS` (UTC), or RFC 3339.
fn planned(record: &Value, name: &str) -> Option<Timestamp> {
    let text = field(record, name)?;
    if let Ok(at) = text.parse::<Timestamp>() {
        return Some(at);
    }
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text.trim()).ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// A ServiceNow change state's name with its value (`Assess (-4)`); other values as they are.
fn state_name(value: &str) -> String {
    let name = match value {
        "-5" => "New",
        "-4" => "Assess",
        "-3" => "Authorize",
        "-2" => "Scheduled",
        "-1" => "Implement",
        "0" => "Review",
        "3" => "Closed",
        "4" => "Canceled",
        "" => return "no state".into(),
        other => return format!("'{other}'"),
    };
    format!("{name} ({value})")
}

/// The `changeTicket` kind, as registered in [`super::KINDS`].
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::ChangeTicket
    }
    fn destination(&self, spec: &crate::api::GateSpec) -> Option<(&'static str, String)> {
        Some((
            "spec.changeTicket.url",
            spec.change_ticket.as_ref()?.url.clone(),
        ))
    }
    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.change_ticket.is_some()
    }
    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        env: &GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let settings = super::settings(spec.change_ticket.as_ref(), self.gate_type())?;
        let itsm = TicketCheck::compile(settings, env)?;
        let needs = super::Needs {
            secrets: secrets_of(settings),
            ticket: true,
            ..Default::default()
        };
        Ok((Box::new(TicketCheck { itsm }), needs))
    }
}

/// The Secret keys the gate's credentials name.
pub fn secrets_of(spec: &ChangeTicketGate) -> Vec<crate::api::gate::SecretKeyRef> {
    let Some(c) = &spec.credentials else {
        return vec![];
    };
    let basic = c
        .basic
        .iter()
        .flat_map(|b| [b.username.clone(), b.password.clone()]);
    let oauth = c
        .oauth
        .iter()
        .flat_map(|o| [o.client_id.clone(), o.client_secret.clone()]);
    basic.chain(oauth).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ChangeTicketGate {
        serde_json::from_value(serde_json::json!({"url": "https://itsm.example.com"})).unwrap()
    }

    fn change(state: &str, approval: &str) -> Value {
        serde_json::json!({
            "number": "CHG0001", "sys_id": "abc", "state": state, "approval": approval,
            "start_date": "2026-12-07 10:00:00", "end_date": "2026-12-07 12:00:00",
        })
    }

    fn at(time: &str) -> Timestamp {
        format!("2026-12-07T{time}Z").parse().unwrap()
    }

    fn verdict(records: &[Value], now: &str) -> (GateVerdict, String) {
        let outcome = judge(&spec(), "CHG0001", records, at(now));
        (outcome.verdict, outcome.message)
    }

    #[test]
    fn a_change_on_its_way_holds_the_release_saying_which_state_it_is_in() {
        let (v, why) = verdict(&[change("-4", "requested")], "11:00:00");
        assert_eq!(v, GateVerdict::Pending);
        assert_eq!(
            why,
            "change CHG0001 is in Assess (-4); the release goes out in Implement (-1)"
        );
    }

    #[test]
    fn an_approved_change_in_implement_passes_only_inside_its_planned_window() {
        let implementing = [change("-1", "approved")];
        let (v, why) = verdict(&implementing, "09:59:59");
        assert_eq!(v, GateVerdict::Pending, "{why}");
        assert!(why.contains("opens at 2026-12-07T10:00:00Z"), "{why}");
        assert_eq!(verdict(&implementing, "10:00:00").0, GateVerdict::Passed);
        let (v, why) = verdict(&implementing, "12:00:00");
        assert_eq!(v, GateVerdict::Pending);
        assert!(
            why.contains("planned window ended at 2026-12-07T12:00:00Z"),
            "{why}"
        );
    }

    #[test]
    fn implement_without_approval_waits_and_a_closed_change_fails() {
        let (v, why) = verdict(&[change("-1", "requested")], "11:00:00");
        assert_eq!(
            (v, why.as_str()),
            (
                GateVerdict::Pending,
                "change CHG0001 is in Implement (-1) but its approval is 'requested'"
            )
        );
        let (v, why) = verdict(&[change("4", "approved")], "11:00:00");
        assert_eq!(v, GateVerdict::Failed);
        assert!(why.contains("Canceled (4)"), "{why}");
    }

    #[test]
    fn a_missing_change_waits_two_are_inconclusive_and_no_window_is_no_pass() {
        assert_eq!(verdict(&[], "11:00:00").0, GateVerdict::Pending);
        let two = [change("-1", "approved"), change("-1", "approved")];
        assert_eq!(verdict(&two, "11:00:00").0, GateVerdict::Inconclusive);
        let mut windowless = change("-1", "approved");
        windowless["end_date"] = Value::String(String::new());
        assert_eq!(
            verdict(&[windowless], "11:00:00").0,
            GateVerdict::Inconclusive
        );
    }

    #[test]
    fn other_field_names_and_states_fit_another_itsm() {
        let mut spec = spec();
        spec.fields.state = "status".into();
        spec.states.implement = vec!["Implementing".into()];
        spec.states.waiting = vec!["Awaiting CAB".into()];
        let record = serde_json::json!({
            "status": "Awaiting CAB", "approval": "approved",
            "start_date": "2026-12-07T10:00:00Z", "end_date": "2026-12-07T12:00:00Z",
        });
        let outcome = judge(
            &spec,
            "CHG0001",
            std::slice::from_ref(&record),
            at("11:00:00"),
        );
        assert_eq!(
            outcome.message,
            "change CHG0001 is in 'Awaiting CAB'; the release goes out in 'Implementing'"
        );
        let mut record = record;
        record["status"] = "Implementing".into();
        assert_eq!(
            judge(&spec, "CHG0001", &[record], at("11:00:00")).verdict,
            GateVerdict::Passed
        );
    }
}
