//! Minimal JSON merge patches: only what changed, with `null` for what went away, so a status
//! write happens only when something changed and never clobbers another writer's keys.

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`; `None` when they are equal.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, nv) {
                            patch.insert(k.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_documents_need_no_patch() {
        let v = json!({"a": 1, "b": {"c": [1, 2]}});
        assert_eq!(merge_diff(&v, &v), None);
    }

    #[test]
    fn changed_removed_and_added_keys_are_patched() {
        let old = json!({"phase": "Waiting", "rollout": {"release": "r1"}, "keep": 1});
        let new = json!({"phase": "Idle", "keep": 1, "current": "r1"});
        assert_eq!(
            merge_diff(&old, &new),
            Some(json!({"phase": "Idle", "rollout": null, "current": "r1"}))
        );
    }

    #[test]
    fn lists_are_replaced_whole() {
        let old = json!({"history": [1, 2]});
        let new = json!({"history": [0, 1, 2]});
        assert_eq!(merge_diff(&old, &new), Some(json!({"history": [0, 1, 2]})));
    }
}
