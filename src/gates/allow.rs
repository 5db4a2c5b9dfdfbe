//! The destinations gates may call (webhooks and Prometheus alike), set by whoever runs the
//! operator, so that a Gate author cannot use the operator to reach addresses they have no
//! business reaching.

use std::fmt;

/// Entries are `host`, `host:port`, `*.domain` or `*` (anything). Empty allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<String>,
}

impl AllowList {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Self {
        let entries = entries
            .into_iter()
            .flat_map(|e| {
                e.as_ref()
                    .split(',')
                    .map(|p| p.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .filter(|e| !e.is_empty())
            .collect();
        Self { entries }
    }

    pub fn permits(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
        self.entries.iter().any(|e| {
            e == "*"
                || *e == host
                || with_port.as_deref() == Some(e.as_str())
                || e.strip_prefix("*.")
                    .is_some_and(|domain| host.ends_with(&format!(".{domain}")))
        })
    }
}

impl AllowList {
    /// Why `url` may not be called, naming its host and port; `None` when it may.
    pub fn refusal(&self, url: &reqwest::Url) -> Option<String> {
        if self.permits(url) {
            return None;
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        Some(format!(
            "destination '{host}:{port}' is not in the operator's gate allow-list ({self}); ask whoever runs Greenlight to add it with --webhook-allow"
        ))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            write!(f, "<empty>")
        } else {
            write!(f, "{}", self.entries.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_ports_and_domains_are_matched_exactly() {
        let allow = AllowList::new(["hooks.example.com", "10.1.2.3:8443", "*.ci.example.com"]);
        assert!(allow.permits(&url("https://hooks.example.com/x")));
        assert!(allow.permits(&url("HTTPS://HOOKS.example.com/x")));
        assert!(allow.permits(&url("https://10.1.2.3:8443/x")));
        assert!(
            !allow.permits(&url("https://10.1.2.3/x")),
            "another port of an allowed host:port"
        );
        assert!(allow.permits(&url("https://a.ci.example.com/x")));
        assert!(!allow.permits(&url("https://ci.example.com.evil.io/x")));
        assert!(!allow.permits(&url("https://evilci.example.com/x")));
        assert!(!allow.permits(&url("http://169.254.169.254/latest/meta-data")));
    }

    #[test]
    fn an_empty_list_allows_nothing_and_a_star_everything() {
        assert!(!AllowList::default().permits(&url("http://127.0.0.1/")));
        assert!(AllowList::new(["*"]).permits(&url("http://127.0.0.1/")));
        assert!(
            AllowList::new(["a.example.com, b.example.com"]).permits(&url("http://b.example.com/"))
        );
    }
}
