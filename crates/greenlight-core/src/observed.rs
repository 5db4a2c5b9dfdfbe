//! What the shell observed of the workloads, in the form the machine decides on.

/// A managed Deployment as observed (what the state machine sees of it).
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryView {
    /// Release named by the pod template's annotation.
    pub release: Option<String>,
    /// The pinned template it was built from, by digest.
    pub template: Option<String>,
    pub replicas: i32,
    /// Every replica runs the current template and is available.
    pub available: bool,
    /// At least one replica of the current template is available (or none is wanted):
    /// traffic sent to it reaches this release. Pods of the previous template that are still
    /// available do not count: they go as soon as the new ones come.
    pub serving: bool,
    /// A short description of its rollout, e.g. `1/3 updated, 0/3 available`.
    pub detail: String,
}
