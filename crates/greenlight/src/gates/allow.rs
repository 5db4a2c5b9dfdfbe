//! The destinations gates may call (webhooks and Prometheus alike), set by whoever runs the
//! operator, so that a Gate author cannot use the operator to reach addresses they have no
//! business reaching. Names are checked again after DNS resolution: loopback, link-local
//! (which holds the cloud metadata service) and unspecified addresses are reached only when
//! the list names the address itself, however the host is spelled and whatever `*` says.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Entries are `host`, `host:port`, `*.domain` or `*` (anything but fenced addresses), and
/// IP addresses (`127.0.0.1`, `127.0.0.1:9090`). Empty allows nothing.
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
        if let Some(ip) = literal_ip(url).filter(|ip| fenced(*ip).is_some()) {
            return self.names_address(ip, url.port_or_known_default());
        }
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
    /// Whether an entry names this address itself: bare, or with `port` when one is given.
    /// A name resolved to the address has no port to check, so only a bare entry counts.
    pub fn names_address(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let bare = ip.to_string();
        let shown = match ip {
            IpAddr::V4(_) => bare.clone(),
            IpAddr::V6(_) => format!("[{bare}]"),
        };
        let with_port = port.map(|p| format!("{shown}:{p}"));
        self.entries
            .iter()
            .any(|e| *e == bare || with_port.as_deref() == Some(e.as_str()))
    }

    /// Why `host` may not be reached at `ip`, which it resolves to; `None` when it may.
    pub fn resolved_refusal(&self, host: &str, ip: IpAddr) -> Option<String> {
        let what = fenced(ip)?;
        (!self.names_address(ip, None)).then(|| {
            format!(
                "'{host}' resolves to {ip}, a {what} address, which gates reach only when --webhook-allow names {ip} itself"
            )
        })
    }

    /// Why `url` may not be called, naming its host and port; `None` when it may.
    pub fn refusal(&self, url: &reqwest::Url) -> Option<String> {
        if self.permits(url) {
            return None;
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        if let Some((ip, what)) = literal_ip(url).and_then(|ip| Some((ip, fenced(ip)?))) {
            return Some(format!(
                "destination '{host}:{port}' is a {what} address, which gates reach only when --webhook-allow names {ip} (or {ip}:{port}) itself"
            ));
        }
        Some(format!(
            "destination '{host}:{port}' is not in the operator's gate allow-list ({self}); ask whoever runs Greenlight to add it with --webhook-allow"
        ))
    }
}

/// What kind of address `ip` is, when gates must not reach it unless it is named: loopback,
/// link-local (169.254.0.0/16 holds the cloud metadata services), unspecified, or a known
/// metadata address.
pub fn fenced(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        // AWS's IPv6 metadata endpoint, fd00:ec2::254.
        IpAddr::V6(v6) if v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] => {
            Some("cloud metadata")
        }
        // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b] = v6.segments();
            let v4 = std::net::Ipv4Addr::from((u32::from(a) << 16) | u32::from(b));
            fenced(IpAddr::V4(v4))
        }
        // IPv4-mapped and IPv4-compatible forms are judged as the IPv4 address they carry.
        IpAddr::V6(v6) => v6.to_ipv4().and_then(|v4| fenced(IpAddr::V4(v4))),
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local (cloud metadata)"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        // Metadata services outside link-local: Alibaba Cloud's, and Azure's WireServer.
        IpAddr::V4(v4) if [[100, 100, 100, 200], [168, 63, 129, 16]].contains(&v4.octets()) => {
            Some("cloud metadata")
        }
        IpAddr::V4(_) => None,
    }
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Resolves names for gate calls and drops every fenced address the allow-list does not name,
/// so a host that passed the name check cannot be pointed at loopback or the metadata
/// service afterwards (DNS rebinding): the address connected to is the address checked.
#[derive(Clone, Debug)]
pub struct FencedResolver(pub AllowList);

impl reqwest::dns::Resolve for FencedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusals = vec![];
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match allow.resolved_refusal(&host, a.ip()) {
                    Some(why) => {
                        refusals.push(why);
                        false
                    }
                    None => true,
                })
                .collect();
            if kept.is_empty() {
                let why = refusals.first().cloned();
                return Err(why
                    .unwrap_or_else(|| format!("'{host}' resolves to nothing"))
                    .into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Every refusal of the addresses `host` resolves to now; none when it does not resolve
/// (it may exist later; the resolver checks again at every call).
pub async fn resolution_refusals(host: &str, allow: &AllowList) -> Vec<String> {
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return vec![];
    }
    let lookup = tokio::net::lookup_host((host, 0));
    let Ok(Ok(found)) = tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await
    else {
        return vec![];
    };
    let mut refusals: Vec<String> = found
        .filter_map(|a| allow.resolved_refusal(host, a.ip()))
        .collect();
    refusals.dedup();
    refusals
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
    fn an_empty_list_allows_nothing_and_a_star_everything_but_fenced_addresses() {
        assert!(!AllowList::default().permits(&url("http://127.0.0.1/")));
        assert!(AllowList::new(["*"]).permits(&url("http://10.0.0.1/")));
        assert!(!AllowList::new(["*"]).permits(&url("http://127.0.0.1/")));
        assert!(
            AllowList::new(["a.example.com, b.example.com"]).permits(&url("http://b.example.com/"))
        );
    }

    #[test]
    fn loopback_link_local_and_metadata_are_reached_only_when_named_by_address() {
        let star = AllowList::new(["*"]);
        for fenced in [
            "http://127.0.0.1:9090/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0/",
        ] {
            let why = star.refusal(&url(fenced)).unwrap_or_default();
            assert!(why.contains("itself"), "{fenced}: {why}");
        }
        let named = AllowList::new(["127.0.0.1"]);
        assert!(named.permits(&url("http://127.0.0.1:9090/")));
        let port = AllowList::new(["127.0.0.1:9090"]);
        assert!(port.permits(&url("http://127.0.0.1:9090/")));
        assert!(!port.permits(&url("http://127.0.0.1:22/")), "another port");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            port.resolved_refusal("localtest.me", ip).is_some(),
            "a name has no port"
        );
        assert!(AllowList::new(["::1"]).permits(&url("http://[::1]:80/")));
        assert!(AllowList::new(["[::1]:80"]).permits(&url("http://[::1]:80/")));
        for carried in [
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(fenced(carried.parse().unwrap()).is_some(), "{carried}");
        }
        assert_eq!(fenced("2001:db8::1".parse().unwrap()), None);
        assert_eq!(
            fenced("::2".parse().unwrap()),
            None,
            "not a loopback in disguise"
        );
    }

    #[test]
    fn a_name_resolving_to_loopback_is_refused_unless_the_address_is_named() {
        let allow = AllowList::new(["localhost:9090"]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let why = allow.resolved_refusal("localhost", ip).unwrap();
        assert!(
            why.contains("'localhost' resolves to 127.0.0.1, a loopback address"),
            "{why}"
        );
        assert!(
            AllowList::new(["localhost", "127.0.0.1"])
                .resolved_refusal("localhost", ip)
                .is_none()
        );
        assert!(
            allow
                .resolved_refusal("example", "10.1.2.3".parse().unwrap())
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_resolver_connects_only_to_allowed_addresses() {
        use reqwest::dns::Resolve;
        let refused = FencedResolver(AllowList::new(["localhost"]))
            .resolve("localhost".parse().unwrap())
            .await;
        let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(why.contains("loopback"), "{why}");
        let allowed = FencedResolver(AllowList::new(["localhost", "127.0.0.1", "::1"]))
            .resolve("localhost".parse().unwrap())
            .await;
        assert!(allowed.is_ok());
    }
}
