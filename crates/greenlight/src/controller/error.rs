//! Errors of the controller layer; each variant's [`ReconcileError::label`] is a metric label.

use super::writer::WriteError;
use crate::validation::ValidationErrors;
use crate::workload::WorkloadError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] ValidationErrors),
    #[error("cannot build the primary workload: {0}")]
    Workload(#[from] WorkloadError),
    #[error("cannot serialize status: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("{0} kept changing under concurrent writers")]
    Conflict(&'static str),
    #[error("traffic router: {0}")]
    Router(#[from] crate::routers::RouterError),
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("reconcile panicked: {0}")]
    Panicked(String),
    /// Not an error: the object is backing off after a failure and waits this long more.
    #[error("backing off for {0:?}")]
    BackingOff(std::time::Duration),
}

impl ReconcileError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube_api",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Workload(_) => "workload",
            Self::Serialize(_) => "serialize",
            Self::MissingField(_) => "missing_field",
            Self::Conflict(_) => "conflict",
            Self::Router(e) => e.label(),
            Self::Write(e) => e.label(),
            Self::Panicked(_) => "panic",
            Self::BackingOff(_) => "backing_off",
        }
    }
}
