//! Names Greenlight derives from the names people choose, and their limits. A Stage's name
//! becomes the value of the `greenlight.dev/stage` label; its target's name, with `-primary`
//! and `-canary`, names the Deployments and Services it makes and labels their pods. A
//! Service name is a DNS-1035 label and a label value has at most 63 characters, so a name
//! that would make an invalid one is refused up front, naming the derived name and its
//! limit, rather than stall the stage at its first write.

use std::sync::LazyLock;

use regex::Regex;

use super::FieldError;
use crate::api::{STAGE_LABEL, canary_name, primary_name};

/// The longest label value, and the longest DNS-1035 label (a Service name).
pub const LABEL_LIMIT: usize = 63;

static DNS_1035: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-z]([-a-z0-9]*[a-z0-9])?$").expect("pattern"));

/// The errors of a Stage named `name` serving the Deployment `target`.
pub fn check(name: &str, target: &str, errors: &mut Vec<FieldError>) {
    if name.len() > LABEL_LIMIT {
        errors.push(FieldError::new(
            "metadata.name",
            format!(
                "{} characters; it becomes the value of label {STAGE_LABEL}, which allows {LABEL_LIMIT}",
                name.len()
            ),
        ));
    }
    for derived in [primary_name(target), canary_name(target)] {
        if derived.len() > LABEL_LIMIT {
            errors.push(FieldError::new(
                "spec.target.name",
                format!(
                    "makes Deployment and Service '{derived}' ({} characters), over the {LABEL_LIMIT} a Service name and a label value allow",
                    derived.len()
                ),
            ));
            return;
        }
        if !DNS_1035.is_match(&derived) {
            errors.push(FieldError::new(
                "spec.target.name",
                format!(
                    "makes Service '{derived}', which is not a DNS-1035 label (lower-case letters, digits and '-', starting with a letter)"
                ),
            ));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(name: &str, target: &str) -> Vec<String> {
        let mut errors = vec![];
        check(name, target, &mut errors);
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_stage_name_longer_than_a_label_value_is_refused_naming_the_label() {
        assert!(errors(&"s".repeat(63), "web").is_empty());
        let refused = errors(&"s".repeat(64), "web");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("greenlight.dev/stage") && refused[0].contains("63"));
    }

    #[test]
    fn a_target_whose_primary_would_not_be_a_service_name_is_refused_naming_it() {
        assert!(errors("prod", &"w".repeat(55)).is_empty());
        let refused = errors("prod", &"w".repeat(56));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains(&format!("'{}-primary' (64 characters)", "w".repeat(56))));
        let dotted = errors("prod", "web.v2");
        assert!(dotted[0].contains("'web.v2-primary'") && dotted[0].contains("DNS-1035"));
        assert!(
            !errors("prod", "2web").is_empty(),
            "a Service name starts with a letter"
        );
    }
}
