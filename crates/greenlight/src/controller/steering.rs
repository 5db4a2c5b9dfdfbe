//! The StageCommands people create for a Stage (promote, abort, retry): which one acts on this
//! pass, which are refused and why, and which an abort supersedes. A command counts only when
//! the admission webhook stamped its requester, found them allowed to steer this stage
//! ([`crate::admission::steer`]) and bound it to this Stage object (uid) at this spec
//! (generation); an abort needs only the uid, as aborting is safe at any generation. The status
//! remembers the command last acted upon (`lastCommand`), so a pass after a crash between the
//! stage's status write and the command's own only marks it handled, without acting twice.
//! Once the pass has decided, this module also says what became of each command: on the
//! Stage's status ([`Steering::recorded`]) and on the commands themselves ([`Steering::mark`]).

use std::sync::Arc;

use kube::ResourceExt;

use jiff::Timestamp;

use super::Context;
use super::error::ReconcileError;
use super::writer::Announcement;
use crate::api::stage::StageStatus;
use crate::api::{CommandAction, Stage, StageCommand};
use crate::identity::{IdentityKey, Subject};
use crate::machine::{Command, Outcome, StageEvent};

#[derive(Debug, Clone, Default)]
pub struct Steering {
    /// The command to act on in this pass.
    pub command: Option<Command>,
    /// The StageCommand that acts, or that acted already.
    pub acting: Option<Arc<StageCommand>>,
    /// `name/uid` of that StageCommand, as `status.lastCommand` records it.
    pub text: Option<String>,
    /// It was acted upon already: it is only marked handled.
    pub stale: bool,
    /// Who asked for it: the verified user, or `unverified (why)`.
    pub requester: String,
    /// Older commands an abort takes the place of.
    pub superseded: Vec<Arc<StageCommand>>,
    /// Commands that do not count, with why.
    pub refused: Vec<(Arc<StageCommand>, String)>,
}

/// Chooses among `pending` (oldest first): the first valid abort, else the oldest valid one.
pub fn read(stage: &Stage, pending: Vec<Arc<StageCommand>>, key: &IdentityKey) -> Steering {
    let mut steering = Steering::default();
    let mut valid = vec![];
    for command in pending {
        match check(stage, &command, key) {
            Ok(requester) => valid.push((command, requester)),
            Err(why) => steering.refused.push((command, why)),
        }
    }
    let chosen = valid
        .iter()
        .position(|(c, _)| c.spec.action == CommandAction::Abort)
        .unwrap_or(0);
    let Some((acting, requester)) = valid.get(chosen).cloned() else {
        return steering;
    };
    steering.superseded = valid[..chosen].iter().map(|(c, _)| c.clone()).collect();
    let text = format!("{}/{}", acting.name_any(), acting.uid().unwrap_or_default());
    let acted = stage.status.as_ref().and_then(|s| s.last_command.as_ref());
    steering.stale = acted == Some(&text);
    steering.command = (!steering.stale).then(|| match acting.spec.action {
        CommandAction::Abort => Command::Abort,
        CommandAction::Promote => Command::Promote,
        CommandAction::Retry => Command::Retry(acting.spec.release.clone().unwrap_or_default()),
        CommandAction::Emergency => Command::Emergency(emergency_of(&acting, &requester)),
        CommandAction::CloseReview => Command::CloseReview {
            release: acting.spec.release.clone().unwrap_or_default(),
            post_mortem: acting.spec.post_mortem.clone().unwrap_or_default(),
            by: requester.clone(),
        },
    });
    steering.text = Some(text);
    steering.requester = requester;
    steering.acting = Some(acting);
    steering
}

/// Who asked, when the command counts for this stage; else why it does not.
fn check(stage: &Stage, command: &StageCommand, key: &IdentityKey) -> Result<String, String> {
    let spec = &command.spec;
    let namespace = command.namespace().unwrap_or_default();
    let subject = Subject::Command {
        namespace: &namespace,
        spec,
    };
    let abort = spec.action == CommandAction::Abort;
    let requester = match key.verify(&subject, spec.requested_by.as_ref()) {
        Ok(who) => who.username.clone(),
        Err(why) => return Err(format!("spec.requestedBy: does not count: {why}")),
    };
    let Some(bound) = spec.stage_ref.as_ref() else {
        return Err(
            "spec.stageRef: the admission webhook did not bind it to a Stage; ask again".into(),
        );
    };
    if bound.authorized_as.is_none() {
        let stage = stage.name_any();
        return Err(crate::admission::steer::missing(
            spec.action,
            &stage,
            &requester,
        ));
    }
    if Some(&bound.uid) != stage.metadata.uid.as_ref() {
        return Err(format!(
            "spec.stageRef: made for an earlier Stage named '{}', not this one",
            spec.stage
        ));
    }
    let generation = stage.metadata.generation.unwrap_or_default();
    if !abort && bound.generation != generation {
        return Err(format!(
            "spec.stageRef.generation: the Stage's spec changed since the request (generation {} then, {generation} now); ask again",
            bound.generation
        ));
    }
    if spec.action == CommandAction::Retry && spec.release.is_none() {
        return Err("spec.release: a retry names the release to roll out again".into());
    }
    if let Some(why) = missing_fields(spec) {
        return Err(why.into());
    }
    Ok(requester)
}

/// What an `emergency` or `closeReview` command must say and does not.
fn missing_fields(spec: &crate::api::StageCommandSpec) -> Option<&'static str> {
    match spec.action {
        CommandAction::Emergency if spec.release.is_none() => {
            Some("spec.release: an emergency names the release to roll out")
        }
        CommandAction::Emergency if spec.reason.is_none() || spec.reference.is_none() => Some(
            "spec.reason, spec.reference: an emergency says why, and which incident or ticket it answers",
        ),
        CommandAction::CloseReview if spec.release.is_none() || spec.post_mortem.is_none() => Some(
            "spec.release, spec.postMortem: a review is closed for a release, with its post-mortem",
        ),
        _ => None,
    }
}

/// The emergency an `emergency` command asks for, by its verified requester.
fn emergency_of(
    command: &StageCommand,
    requester: &str,
) -> crate::api::emergency::EmergencyRequest {
    let spec = &command.spec;
    crate::api::emergency::EmergencyRequest {
        release: spec.release.clone().unwrap_or_default(),
        requester: requester.to_string(),
        reason: spec.reason.clone().unwrap_or_default(),
        reference: spec.reference.clone().unwrap_or_default(),
        since: command
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(Timestamp::now, |t| t.0),
    }
}

impl Steering {
    /// What the stage's status records of the command handled in this pass: its `name/uid`,
    /// and why it was refused. A deferred command leaves the record as it was; one acted upon
    /// before a crash keeps what that pass recorded.
    pub fn recorded(
        &self,
        old: &StageStatus,
        outcome: &Outcome,
    ) -> (Option<String>, Option<String>) {
        if outcome.command_deferred {
            return (old.last_command.clone(), old.last_command_refused.clone());
        }
        let refused = match self.stale {
            true => old.last_command_refused.clone(),
            false => refusal(&outcome.events).map(|e| e.note.clone()),
        };
        (self.text.clone(), refused)
    }

    /// Each StageCommand handled in this pass says what became of it: the acting one applied (or
    /// refused, when the machine found nothing for it to do), those it superseded, those that do
    /// not count. A refusal is also an Event on the Stage.
    pub async fn mark(
        &self,
        stage: &Stage,
        outcome: &Outcome,
        ctx: &Context,
        now: Timestamp,
    ) -> Result<(), ReconcileError> {
        use crate::api::CommandPhase::{Applied, Refused, Superseded};
        let events = &outcome.events;
        let acting = self.acting.as_ref().filter(|_| !outcome.command_deferred);
        if let Some(acting) = acting {
            let decided = match self.stale {
                // Marked after a crash: what the pass that acted on it recorded.
                true => stage
                    .status
                    .as_ref()
                    .and_then(|s| s.last_command_refused.clone()),
                false => refusal(events).map(|e| e.note.clone()),
            };
            let (phase, message) = match decided {
                Some(why) => (Refused, why),
                None => (Applied, acted_message(events, &stage.name_any())),
            };
            ctx.writer
                .command_status(acting, phase, &message, now)
                .await?;
        }
        let abort = self
            .acting
            .as_ref()
            .map(|c| c.name_any())
            .unwrap_or_default();
        for superseded in &self.superseded {
            let message = format!("abort '{abort}', requested after it, took its place");
            ctx.writer
                .command_status(superseded, Superseded, &message, now)
                .await?;
        }
        for (command, why) in &self.refused {
            let a = Announcement {
                warning: true,
                reason: "CommandRefused",
                key: format!("refused/{}", command.uid().unwrap_or_default()),
                notify_stage: None,
                note: format!(
                    "{} '{}' does not count: {why}",
                    command.spec.action.as_str(),
                    command.name_any()
                ),
            };
            ctx.writer.events.publish(stage, a).await;
            ctx.writer
                .command_status(command, Refused, why, now)
                .await?;
        }
        Ok(())
    }
}

/// A stage that cannot act refuses the commands waiting for it, so none (an abort above all)
/// lies in wait to act on a later, unrelated rollout.
pub async fn refuse_waiting(
    stage: &Stage,
    why: &str,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    let (namespace, name) = (stage.namespace().unwrap_or_default(), stage.name_any());
    for command in ctx.index.pending_commands(&namespace, &name) {
        let why = format!("stage '{name}' cannot act on it: {why}");
        let phase = crate::api::CommandPhase::Refused;
        ctx.writer
            .command_status(&command, phase, &why, now)
            .await?;
    }
    Ok(())
}

/// The event saying the acting command was refused, if it was.
fn refusal(events: &[StageEvent]) -> Option<&StageEvent> {
    events
        .iter()
        .find(|e| e.kind == crate::machine::Transition::CommandRefused)
}

/// What the acting command did, in the words of the transitions it caused.
fn acted_message(events: &[StageEvent], stage: &str) -> String {
    let notes: Vec<&str> = events
        .iter()
        .filter(|e| e.by_person)
        .map(|e| e.note.as_str())
        .collect();
    match notes.is_empty() {
        true => format!("applied at stage '{stage}'"),
        false => notes.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::command::StageRef;
    use serde_json::json;

    fn key() -> IdentityKey {
        IdentityKey::from_bytes(b"0123456789abcdef0123456789abcdef")
    }

    fn stage(generation: i64, last: Option<&str>) -> Stage {
        serde_json::from_value(json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": "prod", "namespace": "shop", "uid": "stage-uid", "generation": generation},
            "spec": {"pipeline": "shop", "target": {"name": "web"}},
            "status": {"lastCommand": last},
        }))
        .unwrap()
    }

    /// A command as the webhook stamps it: by alice, for the stage at `generation`.
    fn command(name: &str, action: &str, generation: i64) -> Arc<StageCommand> {
        let mut c: StageCommand = serde_json::from_value(json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "StageCommand",
            "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid")},
            "spec": {"stage": "prod", "action": action},
        }))
        .unwrap();
        if action == "retry" {
            c.spec.release = Some("web-2".into());
        }
        c.spec.stage_ref = Some(StageRef {
            uid: "stage-uid".into(),
            generation,
            authorized_as: Some("the 'promote' verb on stages.greenlight.dev".into()),
        });
        let subject = Subject::Command {
            namespace: "shop",
            spec: &c.spec,
        };
        c.spec.requested_by = Some(key().stamp(&subject, "alice", &[]));
        Arc::new(c)
    }

    #[test]
    fn an_abort_acts_first_and_supersedes_what_came_before_it() {
        let pending = vec![
            command("p1", "promote", 3),
            command("a1", "abort", 3),
            command("p2", "promote", 3),
        ];
        let s = read(&stage(3, None), pending, &key());
        assert_eq!(s.command, Some(Command::Abort));
        assert_eq!(s.requester, "alice");
        assert_eq!(s.text.as_deref(), Some("a1/a1-uid"));
        let superseded: Vec<String> = s.superseded.iter().map(|c| c.name_any()).collect();
        assert_eq!(
            superseded,
            ["p1"],
            "p2 came later and waits for the next pass"
        );
    }

    #[test]
    fn a_command_acted_upon_already_is_only_marked_handled() {
        let s = read(
            &stage(3, Some("p1/p1-uid")),
            vec![command("p1", "promote", 3)],
            &key(),
        );
        assert_eq!((s.command, s.stale), (None, true));
    }

    #[test]
    fn a_promote_for_an_older_spec_or_with_a_forged_requester_does_not_count() {
        let s = read(&stage(4, None), vec![command("p1", "promote", 3)], &key());
        assert_eq!(s.command, None);
        assert!(
            s.refused[0].1.contains("generation 3 then, 4 now"),
            "{:?}",
            s.refused
        );

        let mut forged = (*command("r1", "retry", 4)).clone();
        forged.spec.requested_by.as_mut().unwrap().username = "mallory".into();
        let s = read(&stage(4, None), vec![Arc::new(forged)], &key());
        assert_eq!(s.command, None);
        assert!(
            s.refused[0].1.starts_with("spec.requestedBy"),
            "{:?}",
            s.refused
        );
    }

    #[test]
    fn an_abort_counts_whatever_the_generation_but_never_unstamped() {
        let s = read(&stage(9, None), vec![command("a1", "abort", 3)], &key());
        assert_eq!(s.command, Some(Command::Abort));
        let mut bare = (*command("a2", "abort", 3)).clone();
        bare.spec.requested_by = None;
        bare.spec.stage_ref = None;
        let s = read(&stage(9, None), vec![Arc::new(bare)], &key());
        assert_eq!(s.command, None, "a scripted abort loop needs a stamp too");
        assert!(
            s.refused[0].1.starts_with("spec.requestedBy"),
            "{:?}",
            s.refused
        );
    }

    #[test]
    fn a_command_by_someone_the_webhook_did_not_authorise_is_refused_naming_the_verb() {
        for (action, verb) in [("promote", "'promote' verb"), ("abort", "'abort' verb")] {
            let mut c = (*command("c1", action, 3)).clone();
            c.spec.stage_ref.as_mut().unwrap().authorized_as = None;
            let subject = Subject::Command {
                namespace: "shop",
                spec: &c.spec,
            };
            c.spec.requested_by = Some(key().stamp(&subject, "erin", &[]));
            let s = read(&stage(3, None), vec![Arc::new(c)], &key());
            assert_eq!(s.command, None);
            let why = &s.refused[0].1;
            assert!(why.contains(verb) && why.contains("erin"), "{why}");
        }
    }

    #[test]
    fn a_stamped_promote_bound_to_no_stage_is_refused() {
        let mut unbound = (*command("p1", "promote", 3)).clone();
        unbound.spec.stage_ref = None;
        let subject = Subject::Command {
            namespace: "shop",
            spec: &unbound.spec,
        };
        unbound.spec.requested_by = Some(key().stamp(&subject, "alice", &[]));
        let s = read(&stage(3, None), vec![Arc::new(unbound)], &key());
        assert_eq!(s.command, None);
        assert!(
            s.refused[0].1.starts_with("spec.stageRef"),
            "{:?}",
            s.refused
        );
    }

    #[test]
    fn a_command_for_an_earlier_stage_of_that_name_is_refused() {
        let mut other = (*command("p1", "promote", 3)).clone();
        other.spec.stage_ref.as_mut().unwrap().uid = "old-uid".into();
        let subject = Subject::Command {
            namespace: "shop",
            spec: &other.spec,
        };
        other.spec.requested_by = Some(key().stamp(&subject, "alice", &[]));
        let s = read(&stage(3, None), vec![Arc::new(other)], &key());
        assert!(s.refused[0].1.contains("earlier Stage"), "{:?}", s.refused);
    }
}
