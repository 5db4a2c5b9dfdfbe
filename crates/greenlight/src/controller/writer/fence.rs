//! The writer's client, fenced by the leader lease: no request leaves once the lease's
//! deadline has passed, and one that has not been answered by then is abandoned. A write is
//! never sent by a replica that may have been replaced; one sent just before is stopped at
//! the apiserver by the resourceVersion it carries (see [`super::Writer::stage_status`]).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;

use crate::leader::Leadership;

/// A client whose every request carries the lease's deadline.
pub fn fenced(client: kube::Client, lease: Arc<Leadership>) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    kube::Client::new(Fenced { client, lease }, namespace)
}

#[derive(Clone)]
struct Fenced {
    client: kube::Client,
    lease: Arc<Leadership>,
}

impl tower::Service<Request<Body>> for Fenced {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (client, lease) = (self.client.clone(), self.lease.clone());
        Box::pin(async move {
            let Some(until) = lease.deadline() else {
                return Err(kube::Error::Service(
                    "not sent: this replica does not lead".into(),
                ));
            };
            match tokio::time::timeout_at(until.into(), client.send(request)).await {
                Ok(answered) => answered,
                Err(_) => Err(kube::Error::Service(
                    "abandoned: the leader lease's deadline passed before the apiserver answered"
                        .into(),
                )),
            }
        })
    }
}
