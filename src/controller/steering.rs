//! The steering annotations people set on a Stage (`promote`, `abort`, `retry`): which one acts
//! on this pass, and whether it was acted upon already. The status remembers the one last acted
//! upon (`lastCommand`) until it is gone from the Stage, so a pass after a crash between the
//! status write and the clean-up, or after a clean-up that did not go through, clears it
//! without acting on it twice.

use kube::ResourceExt;

use crate::api::Stage;
use crate::api::{ABORT_ANNOTATION, PROMOTE_ANNOTATION, RETRY_ANNOTATION};
use crate::machine::Command;

/// Steering annotations in the order they take precedence.
const BY_PRECEDENCE: [&str; 3] = [ABORT_ANNOTATION, PROMOTE_ANNOTATION, RETRY_ANNOTATION];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steering {
    /// The command to act on in this pass.
    pub command: Option<Command>,
    /// `key=value` of the annotation that acts, or that acted already.
    pub text: Option<String>,
    /// The annotation was acted upon already: it is only cleared.
    pub stale: bool,
    /// Other steering annotations present, which this pass does not act upon.
    pub dropped: Vec<String>,
}

pub fn read(stage: &Stage) -> Steering {
    let annotations = stage.annotations();
    let present: Vec<(&str, &String)> = BY_PRECEDENCE
        .iter()
        .filter_map(|k| annotations.get(*k).map(|v| (*k, v)))
        .collect();
    let Some((key, value)) = present.first() else {
        return Steering::default();
    };
    let text = format!("{key}={value}");
    let acted = stage.status.as_ref().and_then(|s| s.last_command.as_ref());
    let stale = acted == Some(&text);
    let command = match *key {
        ABORT_ANNOTATION => Command::Abort,
        PROMOTE_ANNOTATION => Command::Promote,
        _ => Command::Retry(value.to_string()),
    };
    Steering {
        command: (!stale).then_some(command),
        text: Some(text),
        stale,
        dropped: present[1..]
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(annotations: serde_json::Value, last: Option<&str>) -> Stage {
        serde_json::from_value(json!({
            "apiVersion": "greenlight.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": "prod", "annotations": annotations},
            "spec": {"pipeline": "shop", "target": {"name": "web"}},
            "status": {"lastCommand": last},
        }))
        .unwrap()
    }

    #[test]
    fn an_abort_takes_precedence_and_the_others_are_dropped() {
        let s = read(&stage(
            json!({"greenlight.dev/promote": "now", "greenlight.dev/abort": "x"}),
            None,
        ));
        assert_eq!(s.command, Some(Command::Abort));
        assert_eq!(s.dropped, ["greenlight.dev/promote=now"]);
    }

    #[test]
    fn a_command_acted_upon_already_is_only_cleared() {
        let annotations = json!({"greenlight.dev/promote": "now"});
        let s = read(&stage(
            annotations.clone(),
            Some("greenlight.dev/promote=now"),
        ));
        assert_eq!((s.command, s.stale), (None, true));
        let fresh = read(&stage(annotations, Some("greenlight.dev/abort=now")));
        assert_eq!(
            (fresh.command, fresh.stale),
            (Some(Command::Promote), false)
        );
    }
}
