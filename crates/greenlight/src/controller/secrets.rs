//! Reads the Secret values a Gate references, right before it is evaluated. Values are kept
//! in memory for that one evaluation only and never logged or written to a status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use kube::{Api, Client};

use crate::api::gate::SecretKeyRef;
use crate::gates::secret_key;

/// The referenced values, or a message naming the missing Secret or key (never its value).
pub async fn resolve(
    refs: &[SecretKeyRef],
    namespace: &str,
    client: &Client,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for r in refs {
        let secret = match api.get_opt(&r.name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return Err(format!("Secret '{}' not found", r.name)),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Err(format!(
                    "the operator may not read Secret '{}': grant it `get` on that Secret with a Role (see config/rbac/secret-reader-example.yaml)",
                    r.name
                ));
            }
            Err(e) => return Err(format!("cannot read Secret '{}': {e}", r.name)),
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| format!("Secret '{}' has no key '{}'", r.name, r.key))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("Secret '{}' key '{}' is not UTF-8", r.name, r.key))?;
        values.insert(secret_key(r), text.trim().to_string());
    }
    Ok(values)
}
