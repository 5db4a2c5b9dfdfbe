//! `kubectl greenlight dashboard`: a web view of a namespace's pipelines, served from the
//! plugin itself. `store` keeps the objects current from watches, `views` makes each page's
//! data, `api` answers the page and carries out its actions as the user, `guard` holds the
//! line a browser needs (loopback, host, CSRF, CSP), `oidc` signs people in for the shared
//! mode, and `assets` is the page, embedded.

pub mod api;
pub mod assets;
pub mod guard;
pub mod oidc;
pub mod store;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use kube::{Client, Config};

use crate::PluginError;
use crate::act::Ctx;
use store::Store;

/// The dashboard's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Where to listen. Without --auth, a loopback address only: the page acts with your
    /// kubeconfig, so anyone who reaches it would act as you.
    #[arg(long, default_value = "127.0.0.1:3100")]
    pub address: SocketAddr,
    /// How people are known: `none` acts with your kubeconfig (loopback only); `oidc` signs
    /// each person in at an OpenID Connect issuer and acts as them by impersonation.
    #[arg(long, value_enum, default_value = "none")]
    pub auth: Auth,
    #[command(flatten)]
    pub oidc: oidc::OidcOptions,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Every request acts with the kubeconfig's own user.
    None,
    /// Every request acts as the signed-in person (Impersonate-User and -Group).
    Oidc,
}

/// One person's view of the cluster: their client, what they may see, and the token their
/// page must send back with every action.
pub struct Session {
    pub ctx: Ctx,
    pub user: Option<String>,
    pub store: Store,
    pub csrf: String,
}

impl Session {
    pub fn new(client: Client, namespace: String, user: Option<String>) -> Session {
        Session {
            store: Store::watch(&client, &namespace),
            ctx: Ctx {
                client,
                ns: namespace,
            },
            user,
            csrf: guard::token(),
        }
    }
}

/// Who a request acts as: the one local session, or each signed-in person's own.
#[derive(Clone)]
pub enum Mode {
    Local(Arc<Session>),
    Oidc(Arc<oidc::Provider>),
}

/// What every request handler shares.
#[derive(Clone)]
pub struct App {
    pub mode: Mode,
    /// The `Host` values the page may be reached by.
    pub hosts: Arc<Vec<String>>,
    /// The local dashboard's key, which its printed address carries.
    pub key: Option<Arc<str>>,
    pub port: u16,
}

/// Serves the dashboard until Ctrl-C (or SIGTERM, in a pod).
pub async fn serve(config: Config, namespace: String, options: Options) -> Result<u8, PluginError> {
    if !options.address.ip().is_loopback() && options.auth == Auth::None {
        return Err(PluginError::Config(format!(
            "refusing to serve on {} without --auth oidc: the page acts with your kubeconfig, \
             so anyone who reaches it would act as you (use a loopback address, e.g. \
             127.0.0.1:3100)",
            options.address
        )));
    }
    let listener = tokio::net::TcpListener::bind(options.address)
        .await
        .map_err(|e| PluginError::Config(format!("cannot listen on {}: {e}", options.address)))?;
    let address = listener.local_addr()?;
    let app = match options.auth {
        Auth::None => {
            let client =
                Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
            App {
                mode: Mode::Local(Arc::new(Session::new(client, namespace, None))),
                hosts: Arc::new(guard::loopback_hosts(address)),
                key: Some(guard::token().into()),
                port: address.port(),
            }
        }
        Auth::Oidc => {
            let provider = oidc::Provider::start(options.oidc, config, namespace).await?;
            let mut hosts = guard::loopback_hosts(address);
            hosts.extend(provider.host());
            App {
                mode: Mode::Oidc(Arc::new(provider)),
                hosts: Arc::new(hosts),
                key: None,
                port: address.port(),
            }
        }
    };
    let key = app
        .key
        .as_deref()
        .map(|k| format!("?key={k}"))
        .unwrap_or_default();
    println!("Greenlight dashboard: http://{address}/{key}  (Ctrl-C to stop)");
    let router = api::router(app);
    // Not a graceful shutdown: an open page's event stream never ends by itself.
    tokio::select! {
        served = axum::serve(listener, router) => served?,
        _ = shutdown() => {}
    }
    Ok(0)
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => t.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}
