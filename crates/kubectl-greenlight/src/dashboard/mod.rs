//! `kubectl greenlight dashboard`: a web view of a namespace's pipelines, served from the
//! plugin itself. `store` keeps the objects current from watches, `views` makes each page's
//! data, `api` answers the page and carries out its actions as the user, `guard` holds the
//! line a browser needs (loopback, host, CSRF, CSP), and `assets` is the page, embedded.

pub mod api;
pub mod assets;
pub mod guard;
pub mod store;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;

use crate::PluginError;
use crate::act::Ctx;
use store::Store;

/// The dashboard's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Where to listen: a loopback address only, because the page acts with your kubeconfig
    /// and anyone who reaches it would act as you.
    #[arg(long, default_value = "127.0.0.1:3100")]
    pub address: SocketAddr,
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

/// What every request handler shares.
#[derive(Clone)]
pub struct App {
    pub session: Arc<Session>,
    /// The `Host` values the page may be reached by.
    pub hosts: Arc<Vec<String>>,
}

/// Serves the dashboard until Ctrl-C.
pub async fn serve(client: Client, namespace: String, options: Options) -> Result<u8, PluginError> {
    if !options.address.ip().is_loopback() {
        return Err(PluginError::Config(format!(
            "refusing to serve on {}: the page acts with your kubeconfig, so anyone who reaches \
             it would act as you (use a loopback address, e.g. 127.0.0.1:3100; a shared, \
             signed-in dashboard is not built yet)",
            options.address
        )));
    }
    let listener = tokio::net::TcpListener::bind(options.address)
        .await
        .map_err(|e| PluginError::Config(format!("cannot listen on {}: {e}", options.address)))?;
    let address = listener.local_addr()?;
    let app = App {
        session: Arc::new(Session::new(client, namespace, None)),
        hosts: Arc::new(guard::loopback_hosts(address)),
    };
    println!("Greenlight dashboard: http://{address}/  (Ctrl-C to stop)");
    let router = api::router(app);
    // Not a graceful shutdown: an open page's event stream never ends by itself.
    tokio::select! {
        served = axum::serve(listener, router) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}
