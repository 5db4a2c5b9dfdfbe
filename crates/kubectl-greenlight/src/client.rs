//! The plugin's way to the cluster: kubectl's kubeconfig, context and namespace flags, and
//! errors a person can act on (a missing object, forbidden access, no CRDs).

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// What went wrong, in words for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{kind} '{name}' not found in namespace {namespace}")]
    NotFound {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    #[error(
        "forbidden: {0}\n(ask for access, or check with `kubectl auth can-i`; release managers get it from config/rbac/release-manager-example.yaml)"
    )]
    Forbidden(String),
    #[error(
        "this cluster does not serve greenlight.dev/v1alpha1: install Greenlight's CRDs first (`kubectl apply -f crds/` or the Helm chart)"
    )]
    NoCrds,
    #[error("cannot reach the cluster: {0}")]
    Unreachable(String),
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("{0}")]
    Api(String),
    #[error("timed out after {0}")]
    Timeout(String),
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// kubectl's connection flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Connection {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

impl Connection {
    /// A client and the namespace to work in.
    pub async fn connect(&self) -> Result<(Client, String), PluginError> {
        let config = self.config().await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
        Ok((client, namespace))
    }

    /// The connection kubectl would make with these flags.
    pub async fn config(&self) -> Result<Config, PluginError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(config_error)?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(config_error)?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(config_error)?,
            None => Config::infer().await.map_err(config_error)?,
        };
        Ok(config)
    }
}

fn config_error(e: impl std::fmt::Display) -> PluginError {
    PluginError::Config(e.to_string())
}

/// An API error as a person would want it said.
pub fn explain(e: kube::Error, kind: &'static str, name: &str, namespace: &str) -> PluginError {
    match e {
        kube::Error::Api(status)
            if status.code == 404 && status.reason == "NotFound" && !name.is_empty() =>
        {
            if status
                .message
                .contains("the server could not find the requested resource")
            {
                PluginError::NoCrds
            } else {
                PluginError::NotFound {
                    kind,
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                }
            }
        }
        kube::Error::Api(status) if status.code == 404 => PluginError::NoCrds,
        kube::Error::Api(status) if status.code == 403 => PluginError::Forbidden(status.message),
        kube::Error::Api(status) => PluginError::Api(status.message),
        kube::Error::HyperError(e) => PluginError::Unreachable(e.to_string()),
        kube::Error::Service(e) => PluginError::Unreachable(e.to_string()),
        other => PluginError::Api(other.to_string()),
    }
}
