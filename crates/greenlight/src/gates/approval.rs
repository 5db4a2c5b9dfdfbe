//! The `approval` gate: passes once enough distinct allowed people have approved the release
//! for the stage; one rejection by an allowed person fails it. Only approvals whose approver
//! stamp the operator verified count, and the release's author may not approve it unless the
//! gate says so.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;

use super::{GateCheck, GateContext, GateOutcome};
use crate::api::gate::ApprovalGate;
use crate::api::release::GateVerdict;
use crate::api::{Decision, Identity, ReleaseRef};
use crate::identity::Unverified;
use crate::schedule::parse_duration;
use crate::validation::FieldError;

/// An Approval of the judged release at the judged stage, its stamp already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub name: String,
    pub decision: Decision,
    pub comment: Option<String>,
    pub created: Timestamp,
    /// The verified approver, or why the stamp does not vouch for anyone.
    pub approver: Result<Identity, Unverified>,
    /// The Release object the decision was made for (stamped with the approver).
    pub release_ref: Option<ReleaseRef>,
}

/// Who may approve, how many, and for how long an approval counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPolicy {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub required: usize,
    pub allow_self_approval: bool,
    pub expiry: Option<Duration>,
}

impl ApprovalPolicy {
    pub fn compile(spec: &ApprovalGate) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if spec.users.is_empty() && spec.groups.is_empty() {
            errors.push(FieldError::new(
                "spec.approval",
                "name who may approve in users or groups (or both)",
            ));
        }
        for (field, names) in [("users", &spec.users), ("groups", &spec.groups)] {
            if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
                errors.push(FieldError::new(
                    format!("spec.approval.{field}[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if !(1..=100).contains(&spec.required) {
            errors.push(FieldError::new(
                "spec.approval.required",
                format!("must be between 1 and 100, got {}", spec.required),
            ));
        }
        let expiry = match spec.expiry.as_deref().map(parse_duration) {
            None => None,
            Some(Ok(d)) if d >= Duration::from_secs(1) => Some(d),
            Some(Ok(_)) => {
                errors.push(FieldError::new(
                    "spec.approval.expiry",
                    "must be at least 1s",
                ));
                None
            }
            Some(Err(e)) => {
                errors.push(FieldError::new("spec.approval.expiry", e.to_string()));
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            users: spec.users.iter().cloned().collect(),
            groups: spec.groups.iter().cloned().collect(),
            required: spec.required.clamp(1, 100) as usize,
            allow_self_approval: spec.allow_self_approval,
            expiry,
        })
    }

    /// Why `who` may not decide on a release created by `author`, if they may not.
    /// Whether the gate names this person among its users or groups.
    pub fn admits(&self, username: &str, groups: &[String]) -> bool {
        self.users.contains(username) || groups.iter().any(|g| self.groups.contains(g))
    }

    pub fn refusal(&self, who: &Identity, author: &Result<String, Unverified>) -> Option<String> {
        let allowed = self.admits(&who.username, &who.groups);
        if !allowed {
            return Some(format!(
                "{} is not an allowed approver (neither in users nor in groups)",
                who.username
            ));
        }
        if self.allow_self_approval {
            return None;
        }
        match author {
            Ok(author) if *author == who.username => Some(format!(
                "{} created the release and may not approve it (allowSelfApproval is false)",
                who.username
            )),
            Ok(_) => None,
            Err(why) => Some(format!(
                "the release's author is unknown ({why}), so self-approval cannot be ruled out"
            )),
        }
    }
}

pub struct ApprovalCheck {
    policy: ApprovalPolicy,
}

impl ApprovalCheck {
    pub fn compile(spec: &ApprovalGate) -> Result<Box<dyn GateCheck>, Vec<FieldError>> {
        Ok(Box::new(Self {
            policy: ApprovalPolicy::compile(spec)?,
        }))
    }

    /// Why a verified decision does not count here: its author may not approve, it was given
    /// for another Release object, or before the configuration change it would let through.
    fn not_counted(
        &self,
        approval: &ApprovalRecord,
        who: &Identity,
        ctx: &GateContext,
    ) -> Option<String> {
        if let Some(why) = self.policy.refusal(who, &ctx.release_author) {
            return Some(why);
        }
        if let Some(why) = for_another_release(approval, ctx) {
            return Some(why);
        }
        if let Some((requester, since)) = &ctx.emergency {
            if who.username == *requester {
                return Some(format!(
                    "{requester} asked for the emergency and may not approve it"
                ));
            }
            if approval.created < *since {
                return Some(format!(
                    "{}'s approval was given before the emergency was asked for ({since})",
                    who.username
                ));
            }
        }
        let (_, since) = ctx
            .configuration
            .as_ref()
            .filter(|(_, s)| approval.created < *s)?;
        Some(format!(
            "{}'s approval was given before the configuration change it would let through (which waits since {since})",
            who.username
        ))
    }

    fn judge(&self, ctx: &GateContext) -> GateOutcome {
        let policy = &self.policy;
        let mut approvers: Vec<&str> = Vec::new();
        let mut ignored: Vec<String> = Vec::new();
        let mut next_expiry: Option<Timestamp> = None;
        let mut approvals: Vec<&ApprovalRecord> = ctx.approvals.iter().collect();
        approvals.sort_by_key(|a| (a.created, a.name.clone()));
        for approval in approvals {
            let who = match &approval.approver {
                Ok(who) => who,
                Err(why) => {
                    ignored.push(format!("{}: {why}", approval.name));
                    continue;
                }
            };
            if let Some(why) = self.not_counted(approval, who, ctx) {
                ignored.push(why);
                continue;
            }
            if approval.decision == Decision::Reject {
                let comment = approval
                    .comment
                    .as_deref()
                    .map(|c| format!(": {}", super::excerpt(c, 200)))
                    .unwrap_or_default();
                return GateOutcome::new(
                    GateVerdict::Failed,
                    format!("rejected by {}{comment}", who.username),
                )
                .with_value("rejected");
            }
            if let Some(expiry) = policy.expiry {
                let expires = crate::schedule::later(approval.created, expiry);
                if expires <= ctx.now {
                    ignored.push(format!("{}'s approval expired at {expires}", who.username));
                    continue;
                }
                next_expiry = Some(next_expiry.map_or(expires, |e| e.min(expires)));
            }
            if !approvers.contains(&who.username.as_str()) {
                approvers.push(&who.username);
            }
        }
        let value = format!("{}/{}", approvers.len(), policy.required);
        let ignored = if ignored.is_empty() {
            String::new()
        } else {
            format!("; not counted: {}", ignored.join("; "))
        };
        if approvers.len() >= policy.required {
            return GateOutcome::new(
                GateVerdict::Passed,
                format!("approved by {}{ignored}", approvers.join(", ")),
            )
            .with_value(value);
        }
        let so_far = if approvers.is_empty() {
            String::new()
        } else {
            format!(" (so far: {})", approvers.join(", "))
        };
        let outcome = GateOutcome::new(
            GateVerdict::Pending,
            format!(
                "waiting for approval: {} of {} distinct approvers{so_far}{ignored}",
                approvers.len(),
                policy.required
            ),
        )
        .with_value(value);
        match next_expiry {
            Some(at) => outcome.recheck_at(at),
            None => outcome,
        }
    }
}

/// An approval counts only for the Release object it was given for: one given before the
/// release existed, or for an earlier release of that name (deleted and published again,
/// perhaps with other images), was for something else.
pub fn for_another_release(approval: &ApprovalRecord, ctx: &GateContext) -> Option<String> {
    if approval.release_ref.is_some() && approval.release_ref == ctx.release_ref {
        return None;
    }
    let (name, at, release) = (&approval.name, &approval.created, &ctx.release);
    Some(match &approval.release_ref {
        None => {
            format!("{name} was given at {at} before release '{release}' existed; approve it again")
        }
        Some(_) => format!(
            "{name} was given at {at} for an earlier release named '{release}' (deleted and published again since); approve it again"
        ),
    })
}

impl GateCheck for ApprovalCheck {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> BoxFuture<'a, GateOutcome> {
        Box::pin(async move { self.judge(ctx) })
    }
}

/// The `approval` kind, as registered in [`super::KINDS`]: it reads the release's approvals.
pub struct Kind;

impl super::GateKind for Kind {
    fn gate_type(&self) -> crate::api::GateType {
        crate::api::GateType::Approval
    }
    fn configured(&self, spec: &crate::api::GateSpec) -> bool {
        spec.approval.is_some()
    }
    fn compile(
        &self,
        spec: &crate::api::GateSpec,
        _env: &super::GateEnv,
    ) -> Result<(Box<dyn GateCheck>, super::Needs), Vec<FieldError>> {
        let check =
            ApprovalCheck::compile(super::settings(spec.approval.as_ref(), self.gate_type())?)?;
        let needs = super::Needs {
            approvals: true,
            ..Default::default()
        };
        Ok((check, needs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(required: i32, allow_self: bool, expiry: Option<&str>) -> ApprovalCheck {
        ApprovalCheck {
            policy: ApprovalPolicy::compile(&ApprovalGate {
                users: vec!["dana".into()],
                groups: vec!["release-managers".into()],
                required,
                allow_self_approval: allow_self,
                expiry: expiry.map(str::to_string),
            })
            .unwrap(),
        }
    }

    fn who(name: &str, groups: &[&str]) -> Result<Identity, Unverified> {
        Ok(Identity {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            signature: "checked".into(),
        })
    }

    fn record(
        name: &str,
        approver: Result<Identity, Unverified>,
        decision: Decision,
        at: &str,
    ) -> ApprovalRecord {
        ApprovalRecord {
            name: name.into(),
            decision,
            comment: Some("ok".into()),
            created: at.parse().unwrap(),
            approver,
            release_ref: Some(current()),
        }
    }

    fn current() -> ReleaseRef {
        ReleaseRef {
            uid: "uid-now".into(),
            digest: "d".into(),
        }
    }

    fn ctx(author: Result<&str, Unverified>, approvals: Vec<ApprovalRecord>) -> GateContext {
        GateContext {
            namespace: "shop".into(),
            pipeline: "web".into(),
            stage: "prod".into(),
            release: "web-1-2-0".into(),
            version: "1.2.0".into(),
            artifacts: vec![],
            release_stages: Default::default(),
            primary_workload: "web-primary".into(),
            canary_workload: "web-canary".into(),
            secrets: Default::default(),
            approvals,
            release_author: author.map(str::to_string),
            release_ref: Some(current()),
            configuration: None,
            gate: "g".into(),
            list: crate::api::gate::GateList::Gates,
            attempt: 1,
            run: None,
            stage_uid: String::new(),
            measuring: false,
            service_port: 80,
            change_ticket: None,
            ticket_used_by: vec![],
            emergency: None,
            now: "2026-11-22T12:00:00Z".parse().unwrap(),
        }
    }

    const MANAGER: &[&str] = &["release-managers"];

    #[test]
    fn an_allowed_approver_passes_a_one_approver_gate() {
        let c = ctx(
            Ok("ci"),
            vec![record(
                "a",
                who("alice", MANAGER),
                Decision::Approve,
                "2026-11-22T11:00:00Z",
            )],
        );
        let out = gate(1, false, None).judge(&c);
        assert_eq!(out.verdict, GateVerdict::Passed, "{}", out.message);
        assert_eq!(out.message, "approved by alice");
    }

    #[test]
    fn an_approval_given_before_its_release_existed_or_for_an_earlier_one_does_not_count() {
        let mut early = record(
            "early",
            who("alice", MANAGER),
            Decision::Approve,
            "2026-11-22T09:00:00Z",
        );
        early.release_ref = None;
        let out = gate(1, false, None).judge(&ctx(Ok("ci"), vec![early.clone()]));
        assert_eq!(out.verdict, GateVerdict::Pending, "{}", out.message);
        assert!(
            out.message
                .contains("early was given at 2026-11-22T09:00:00Z before release 'web-1-2-0'"),
            "{}",
            out.message
        );
        early.release_ref = Some(ReleaseRef {
            uid: "uid-before".into(),
            digest: "d".into(),
        });
        let out = gate(1, false, None).judge(&ctx(Ok("ci"), vec![early.clone()]));
        assert!(
            out.message
                .contains("for an earlier release named 'web-1-2-0'"),
            "{}",
            out.message
        );
        early.release_ref = Some(current());
        let out = gate(1, false, None).judge(&ctx(Ok("ci"), vec![early]));
        assert_eq!(out.verdict, GateVerdict::Passed);
    }

    #[test]
    fn a_configuration_change_needs_approvals_given_after_it() {
        let before = record(
            "first",
            who("alice", MANAGER),
            Decision::Approve,
            "2026-11-22T10:00:00Z",
        );
        let after = record(
            "again",
            who("bob", MANAGER),
            Decision::Approve,
            "2026-11-22T11:30:00Z",
        );
        let mut c = ctx(Ok("ci"), vec![before.clone()]);
        c.configuration = Some(("sha256:b".into(), "2026-11-22T11:00:00Z".parse().unwrap()));
        let out = gate(1, false, None).judge(&c);
        assert_eq!(out.verdict, GateVerdict::Pending, "{}", out.message);
        assert!(
            out.message.contains("before the configuration change"),
            "{}",
            out.message
        );
        c.approvals = vec![before, after];
        let out = gate(1, false, None).judge(&c);
        assert_eq!(
            out.message,
            "approved by bob; not counted: alice's approval was given before the configuration change it would let through (which waits since 2026-11-22T11:00:00Z)"
        );
    }

    #[test]
    fn the_release_author_cannot_approve_their_own_release() {
        let approvals = vec![record(
            "a",
            who("alice", MANAGER),
            Decision::Approve,
            "2026-11-22T11:00:00Z",
        )];
        let out = gate(1, false, None).judge(&ctx(Ok("alice"), approvals.clone()));
        assert_eq!(out.verdict, GateVerdict::Pending);
        assert!(
            out.message.contains("alice created the release"),
            "{}",
            out.message
        );
        let out = gate(1, true, None).judge(&ctx(Ok("alice"), approvals));
        assert_eq!(out.verdict, GateVerdict::Passed);
    }

    #[test]
    fn an_unknown_author_counts_no_approval_unless_self_approval_is_allowed() {
        let approvals = vec![record(
            "a",
            who("alice", MANAGER),
            Decision::Approve,
            "2026-11-22T11:00:00Z",
        )];
        let out = gate(1, false, None).judge(&ctx(Err(Unverified::Missing), approvals.clone()));
        assert_eq!(out.verdict, GateVerdict::Pending);
        assert!(out.message.contains("author is unknown"), "{}", out.message);
        let out = gate(1, true, None).judge(&ctx(Err(Unverified::Missing), approvals));
        assert_eq!(out.verdict, GateVerdict::Passed);
    }

    #[test]
    fn outsiders_unverified_stamps_and_repeat_approvals_do_not_count() {
        let at = "2026-11-22T11:00:00Z";
        let approvals = vec![
            record("a", who("carol", &["developers"]), Decision::Approve, at),
            record("b", Err(Unverified::BadSignature), Decision::Approve, at),
            record("c", who("alice", MANAGER), Decision::Approve, at),
            record("d", who("alice", MANAGER), Decision::Approve, at),
        ];
        let out = gate(2, false, None).judge(&ctx(Ok("ci"), approvals.clone()));
        assert_eq!(out.verdict, GateVerdict::Pending, "{}", out.message);
        assert_eq!(out.value.as_deref(), Some("1/2"));
        assert!(out.message.contains("carol is not an allowed approver"));
        assert!(out.message.contains("b: its identity stamp"));
        let mut more = approvals;
        more.push(record("e", who("dana", &[]), Decision::Approve, at));
        let out = gate(2, false, None).judge(&ctx(Ok("ci"), more));
        assert_eq!(out.verdict, GateVerdict::Passed, "{}", out.message);
        assert!(out.message.starts_with("approved by alice, dana"));
    }

    #[test]
    fn one_rejection_by_an_allowed_person_fails_the_gate_whatever_the_approvals() {
        let at = "2026-11-22T11:00:00Z";
        let approvals = vec![
            record("a", who("alice", MANAGER), Decision::Approve, at),
            record("b", who("bob", MANAGER), Decision::Reject, at),
        ];
        let out = gate(1, false, None).judge(&ctx(Ok("ci"), approvals));
        assert_eq!(out.verdict, GateVerdict::Failed);
        assert_eq!(out.message, "rejected by bob: ok");
        let outsider = vec![
            record("a", who("alice", MANAGER), Decision::Approve, at),
            record("b", who("carol", &[]), Decision::Reject, at),
        ];
        let out = gate(1, false, None).judge(&ctx(Ok("ci"), outsider));
        assert_eq!(out.verdict, GateVerdict::Passed);
    }

    #[test]
    fn expired_approvals_stop_counting_and_the_gate_wakes_when_one_expires() {
        let approvals = vec![
            record(
                "old",
                who("alice", MANAGER),
                Decision::Approve,
                "2026-11-22T09:00:00Z",
            ),
            record(
                "new",
                who("bob", MANAGER),
                Decision::Approve,
                "2026-11-22T11:30:00Z",
            ),
        ];
        let out = gate(2, false, Some("1h")).judge(&ctx(Ok("ci"), approvals));
        assert_eq!(out.verdict, GateVerdict::Pending);
        assert!(
            out.message.contains("alice's approval expired"),
            "{}",
            out.message
        );
        assert_eq!(
            out.recheck_at,
            Some("2026-11-22T12:30:00Z".parse().unwrap())
        );
    }

    #[test]
    fn a_gate_that_names_nobody_is_refused_with_the_field() {
        let errors = ApprovalPolicy::compile(&ApprovalGate {
            users: vec![],
            groups: vec![],
            required: 0,
            allow_self_approval: false,
            expiry: Some("soon".into()),
        })
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.approval",
                "spec.approval.required",
                "spec.approval.expiry"
            ]
        );
    }
}
