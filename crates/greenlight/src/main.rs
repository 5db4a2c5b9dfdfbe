//! The `greenlight` binary: the controller and the CRD generator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "greenlight",
    version,
    about = "Takes a release from a green build to production"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the current kubeconfig or in-cluster config.
    Controller {
        /// Use this kubeconfig context instead of the current one.
        #[arg(long, env = "GREENLIGHT_CONTEXT")]
        context: Option<String>,
        #[command(flatten)]
        leader: LeaderArgs,
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "GREENLIGHT_NAMESPACE")]
        namespace: Option<String>,
        /// Address of the metrics and health endpoint.
        #[arg(long, env = "GREENLIGHT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: SocketAddr,
        #[arg(long, env = "GREENLIGHT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Destinations webhook gates may call: `host`, `host:port`, `*.domain`, or `*` for any.
        /// Comma-separated; empty (the default) allows none.
        #[arg(long, env = "GREENLIGHT_WEBHOOK_ALLOW", value_delimiter = ',')]
        webhook_allow: Vec<String>,
        /// Prometheus that Prometheus gates without an `address` query, e.g.
        /// `http://prometheus-operated.monitoring:9090`. Its host joins --webhook-allow.
        #[arg(long, env = "GREENLIGHT_PROMETHEUS_ADDRESS", value_parser = parse_prometheus_address)]
        prometheus_address: Option<reqwest::Url>,
        #[command(flatten)]
        identity: IdentityArgs,
        /// The period the DORA metrics cover, up to now: days, weeks or a duration (e.g. 90d).
        #[arg(long, env = "GREENLIGHT_DORA_WINDOW", default_value = "90d", value_parser = greenlight::insight::dora::parse_period)]
        dora_window: jiff::SignedDuration,
        /// How long handled StageCommands, and Approvals of Releases that are done, are kept
        /// before the operator deletes them (what they decided stays on the audit trail).
        #[arg(long, env = "GREENLIGHT_RETENTION", default_value = "7d", value_parser = parse_retention)]
        retention: jiff::SignedDuration,
        /// How many objects each controller reconciles at once. Bounds memory and the load a
        /// burst (thousands of Releases published together) puts on the apiserver.
        #[arg(long, env = "GREENLIGHT_MAX_CONCURRENT_RECONCILES", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
        max_concurrent_reconciles: u16,
        /// Serve the admission webhooks (HTTPS) on this address; off when unset.
        #[arg(long, env = "GREENLIGHT_ADMISSION_ADDR")]
        admission_addr: Option<SocketAddr>,
        /// Directory with tls.crt and tls.key (and ca.crt) for the webhook server, re-read when
        /// they change. Without it a certificate is generated for --admission-host.
        #[arg(
            long,
            env = "GREENLIGHT_ADMISSION_CERT_DIR",
            conflicts_with = "admission_cert_secret"
        )]
        admission_cert_dir: Option<PathBuf>,
        /// Secret (in POD_NAMESPACE, else greenlight-system) that keeps the webhook certificate:
        /// the operator creates it once with a CA and a certificate for --admission-host, every
        /// replica serves it, and it is renewed in place a month before it ends.
        #[arg(long, env = "GREENLIGHT_ADMISSION_CERT_SECRET")]
        admission_cert_secret: Option<String>,
        /// DNS names and IP addresses of a generated webhook certificate.
        #[arg(
            long,
            env = "GREENLIGHT_ADMISSION_HOST",
            value_delimiter = ',',
            default_value = "greenlight-webhook.greenlight-system.svc"
        )]
        admission_host: Vec<String>,
        /// Mutating- and ValidatingWebhookConfiguration whose CA bundle the operator keeps
        /// current; leave empty when cert-manager's CA injector does it.
        #[arg(long, env = "GREENLIGHT_ADMISSION_CONFIGURATION")]
        admission_configuration: Option<String>,
        /// How often the webhook certificate files are re-read and the CA bundle checked.
        #[arg(long, env = "GREENLIGHT_ADMISSION_REFRESH", default_value = "30s", value_parser = parse_duration)]
        admission_refresh: Duration,
        /// PEM file of the CA that signs the apiserver's client certificate for admission
        /// (its AdmissionConfiguration kubeconfig); callers without one are refused.
        #[arg(long, env = "GREENLIGHT_ADMISSION_CLIENT_CA")]
        admission_client_ca: Option<PathBuf>,
        /// File with the bearer token the apiserver presents to the webhooks (its
        /// AdmissionConfiguration kubeconfig); callers without it are refused.
        #[arg(long, env = "GREENLIGHT_ADMISSION_TOKEN_FILE")]
        admission_token_file: Option<PathBuf>,
        /// The operator's own user (e.g. system:serviceaccount:greenlight-system:greenlight):
        /// the webhooks refuse anyone else's change or deletion of the leader Lease.
        #[arg(long, env = "GREENLIGHT_LEASE_WRITER")]
        lease_writer: Option<String>,
    },
    /// Serve the web dashboard for everyone, in the cluster: people sign in at an OpenID
    /// Connect issuer (--auth oidc) and the dashboard acts as each of them by impersonation.
    Dashboard {
        #[command(flatten)]
        conn: kubectl_greenlight::Connection,
        #[command(flatten)]
        options: kubectl_greenlight::dashboard::Options,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crdgen,
    /// Write a new identity key into the operator's Secret, keeping the last three as
    /// previous keys: stamps made before still verify, new ones use the new key. Replicas take
    /// it within seconds, without a restart.
    RotateIdentityKey {
        /// The Secret (as given to the controller's --identity-secret).
        #[arg(long)]
        secret: String,
        /// Its namespace.
        #[arg(long, default_value = "greenlight-system")]
        namespace: String,
        /// Use this kubeconfig context instead of the current one.
        #[arg(long)]
        context: Option<String>,
    },
}

/// The ServiceAccount's name in a `system:serviceaccount:<namespace>:<name>` user.
fn service_account_name(user: &str) -> Option<String> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    rest.split_once(':').map(|(_, name)| name.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen => {
            print!("{}", greenlight::crdgen::render()?);
            Ok(())
        }
        Command::Dashboard { conn, options } => dashboard(conn, options).await,
        Command::RotateIdentityKey {
            secret,
            namespace,
            context,
        } => rotate_identity_key(&secret, &namespace, context).await,
        Command::Controller {
            context,
            leader,
            namespace,
            metrics_addr,
            log_format,
            mut webhook_allow,
            prometheus_address,
            identity,
            admission_addr,
            admission_cert_dir,
            admission_cert_secret,
            admission_host,
            admission_configuration,
            admission_refresh,
            admission_client_ca,
            admission_token_file,
            lease_writer,
            dora_window,
            retention,
            max_concurrent_reconciles,
        } => {
            init_tracing(log_format);
            greenlight::gates::ensure_crypto_provider();
            let operator_account = lease_writer.as_deref().and_then(service_account_name);
            let shared = admission_cert_dir.is_some() || admission_cert_secret.is_some();
            leader.check(admission_addr.is_none() || shared)?;
            let admission = admission_addr.map(|addr| greenlight::admission::ServerConfig {
                addr,
                certificate: cert_source(admission_cert_dir, admission_cert_secret, admission_host),
                configuration: admission_configuration,
                limits: Default::default(),
                refresh_every: admission_refresh,
                clients: greenlight::admission::Clients {
                    ca_file: admission_client_ca,
                    token_file: admission_token_file,
                },
                lease_writer,
            });
            if let Some(url) = &prometheus_address {
                webhook_allow.push(allow_entry(url));
            }
            let client = kube_client(context).await?;
            let metrics = greenlight::metrics::Metrics::new();
            let identity = identity.load(&client, &metrics).await?;
            let server = tokio::spawn(greenlight::metrics::serve(metrics_addr, metrics.clone()));
            let settings = greenlight::controller::Settings {
                leader: leader.config(namespace.as_deref()),
                namespace,
                webhook_allow: greenlight::gates::allow::AllowList::new(webhook_allow),
                prometheus_address: prometheus_address.map(String::from),
                identity,
                admission,
                dora_window,
                concurrency: max_concurrent_reconciles,
                retention,
                operator_account,
            };
            tokio::select! {
                ran = greenlight::controller::run(client, metrics, settings) => Ok(ran?),
                served = server => match served {
                    Ok(Err(e)) => Err(e).with_context(|| format!("metrics server on {metrics_addr} failed")),
                    _ => Ok(()),
                },
            }
        }
    }
}

/// Where the webhook certificate comes from: files, a Secret the operator keeps, or made in
/// memory at start.
fn cert_source(
    dir: Option<PathBuf>,
    secret: Option<String>,
    hosts: Vec<String>,
) -> greenlight::admission::tls::CertSource {
    use greenlight::admission::tls::CertSource;
    match (dir, secret) {
        (Some(dir), _) => CertSource::Files(dir),
        (None, Some(name)) => CertSource::Secret {
            namespace: std::env::var("POD_NAMESPACE")
                .unwrap_or_else(|_| "greenlight-system".into()),
            name,
            hosts,
        },
        (None, None) => CertSource::SelfSigned { hosts },
    }
}

/// Writes a new identity key into the operator's Secret, keeping the previous ones.
async fn rotate_identity_key(
    secret: &str,
    namespace: &str,
    context: Option<String>,
) -> anyhow::Result<()> {
    greenlight::gates::ensure_crypto_provider();
    let client = kube_client(context).await?;
    let store = greenlight::keystore::KeySecret::new(client, namespace, secret);
    let fingerprint = store.rotate().await?;
    println!(
        "{namespace}/{secret}: new identity key {fingerprint}; the previous ones still verify"
    );
    Ok(())
}

/// Days (`7d`) or a duration (`12h`, `30s`), from 1s to 366 days.
fn parse_retention(text: &str) -> Result<jiff::SignedDuration, String> {
    let t = text.trim();
    let secs = match t.strip_suffix('d') {
        Some(days) => days
            .parse::<i64>()
            .map_err(|e| e.to_string())?
            .saturating_mul(86_400),
        None => parse_duration(t)?.as_secs() as i64,
    };
    match secs {
        1..=31_622_400 => Ok(jiff::SignedDuration::from_secs(secs)),
        _ => Err("must be from 1s to 366d".into()),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    greenlight::schedule::parse_duration(text).map_err(|e| e.to_string())
}

/// An http(s) base URL without credentials, query or fragment.
fn parse_prometheus_address(text: &str) -> Result<reqwest::Url, String> {
    let url = greenlight::gates::prom_client::base_url(text)?;
    // It appears in every such gate's status; a password would too.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(url)
}

/// The allow-list entry (`host:port`) for a URL.
fn allow_entry(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    // Colour only on a terminal: the same text log in a file or a pipe holds no escape codes.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Where the identity key comes from: a Secret the operator reads and keeps current (and
/// creates once), or a file (a mounted Secret) with any previous keys of a rotation.
#[derive(clap::Args)]
struct IdentityArgs {
    /// Secret holding the identity key (`key`, with `previous-1`... after rotations). The
    /// operator creates it once with a random key when it is missing, and takes a rotated key
    /// within seconds. Preferred over --identity-key-file: nothing else has to make the key.
    #[arg(long, env = "GREENLIGHT_IDENTITY_SECRET")]
    identity_secret: Option<String>,
    /// Namespace of --identity-secret (default: POD_NAMESPACE, else greenlight-system).
    #[arg(long, env = "GREENLIGHT_IDENTITY_SECRET_NAMESPACE")]
    identity_secret_namespace: Option<String>,
    /// File with the secret key (32 bytes or more) that signs and checks identity stamps,
    /// e.g. from a mounted Secret, when --identity-secret is not used.
    #[arg(long, env = "GREENLIGHT_IDENTITY_KEY_FILE")]
    identity_key_file: Option<PathBuf>,
    /// Files with previous identity keys, during a rotation: stamps they made still verify,
    /// new stamps use --identity-key-file. Remove them when the grace period ends.
    #[arg(
        long,
        env = "GREENLIGHT_PREVIOUS_IDENTITY_KEY_FILES",
        value_delimiter = ','
    )]
    previous_identity_key_file: Vec<PathBuf>,
}

impl IdentityArgs {
    fn secret(&self, client: &kube::Client) -> Option<greenlight::keystore::KeySecret> {
        let name = self.identity_secret.as_deref()?;
        let namespace = self
            .identity_secret_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "greenlight-system".into());
        Some(greenlight::keystore::KeySecret::new(
            client.clone(),
            &namespace,
            name,
        ))
    }

    /// The key. Always required: a key made at start-up would make every stamp worthless
    /// after a restart, and would call every protected stage's spec unverified.
    async fn load(
        &self,
        client: &kube::Client,
        metrics: &Arc<greenlight::metrics::Metrics>,
    ) -> anyhow::Result<Arc<greenlight::identity::IdentityKey>> {
        use greenlight::identity::IdentityKey;
        if let Some(secret) = self.secret(client) {
            let key = Arc::new(secret.load_or_create().await?);
            tokio::spawn(secret.keep_current(key.clone(), metrics.clone()));
            return Ok(key);
        }
        let Some(path) = &self.identity_key_file else {
            anyhow::bail!(
                "--identity-secret or --identity-key-file is required: the key (32+ random \
                 bytes) that signs and checks who approved, published, steered or changed what; \
                 every replica and the admission webhook need the same one"
            );
        };
        let key = IdentityKey::from_file(path)?;
        let key = self
            .previous_identity_key_file
            .iter()
            .try_fold(key, |key, path| {
                anyhow::Ok(key.with_previous(IdentityKey::from_file(path)?))
            })?;
        Ok(Arc::new(key))
    }
}

/// Leader election among replicas (`--leader-election`).
#[derive(clap::Args)]
struct LeaderArgs {
    /// Elect a leader on a Lease: only the leader reconciles, every replica serves the
    /// admission webhooks. Run two or more replicas with it.
    #[arg(long, env = "GREENLIGHT_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: --namespace, else POD_NAMESPACE, else
    /// greenlight-system).
    #[arg(long, env = "GREENLIGHT_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// How long a renewal holds the lease: a standby takes over after this much silence.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    /// How often the leader renews, and a standby looks.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    leader_election_retry: Duration,
}

impl LeaderArgs {
    /// Timings a lease can work with: a leader must be able to renew before its deadline.
    fn check(&self, shared_certificate: bool) -> anyhow::Result<()> {
        if !self.leader_election {
            return Ok(());
        }
        let (duration, retry) = (
            self.leader_election_lease_duration,
            self.leader_election_retry,
        );
        greenlight::leader::timings::check(duration, retry).map_err(|why| {
            anyhow::anyhow!(
                "--leader-election-lease-duration {duration:?}, --leader-election-retry {retry:?}: {why}"
            )
        })?;
        anyhow::ensure!(
            shared_certificate,
            "--leader-election with --admission-addr needs --admission-cert-secret or --admission-cert-dir: replicas with certificates of their own would overwrite each other's CA bundle"
        );
        Ok(())
    }

    fn config(&self, namespace: Option<&str>) -> Option<greenlight::leader::LeaseConfig> {
        if !self.leader_election {
            return None;
        }
        let namespace = self
            .leader_election_namespace
            .clone()
            .or_else(|| namespace.map(String::from))
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "greenlight-system".into());
        let pod = std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME"));
        let identity = format!(
            "{}_{}",
            pod.unwrap_or_else(|_| "greenlight".into()),
            std::process::id()
        );
        Some(greenlight::leader::LeaseConfig {
            namespace,
            name: "greenlight-controller".into(),
            identity,
            duration: self.leader_election_lease_duration,
            retry: self.leader_election_retry,
        })
    }
}

/// A client for the named kubeconfig context, else the current one (or in-cluster).
async fn kube_client(context: Option<String>) -> anyhow::Result<kube::Client> {
    let config = match context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| format!("no kubeconfig context '{context}'"))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration found")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// `greenlight dashboard`: the plugin's dashboard, with the pod's own account.
async fn dashboard(
    conn: kubectl_greenlight::Connection,
    options: kubectl_greenlight::dashboard::Options,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = conn.config().await?;
    let namespace = conn
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    kubectl_greenlight::dashboard::serve(config, namespace, options).await?;
    Ok(())
}
