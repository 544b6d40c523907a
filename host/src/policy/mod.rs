//! Scope policies: the interface the decision function asks, and the sandboxed Wasm runtime
//! that implements it for plugins.
//!
//! A policy only answers "does this route need a scope this key lacks?". Authentication, tenant
//! and project isolation happen before it is asked, in [`crate::decision`].

pub mod bindings;
mod runtime;
mod set;

pub use runtime::{LoadError, Plugin, PluginError, PolicyEngine, PolicyLimits};
pub use set::{ActivePolicy, BrokenPolicy, PolicySet, PolicySource};

/// One request as a policy sees it (borrowed; the runtime copies it into the guest).
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    /// Upper-case HTTP method.
    pub method: &'a str,
    /// The request path without the query.
    pub path: &'a str,
    /// The path below the project, starting with `/`.
    pub resource: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The team in the path (already checked to be the key's).
    pub team_id: &'a str,
    /// The project in the path (already checked to be allowed for the key).
    pub project_id: &'a str,
    /// The key's id.
    pub key_id: &'a str,
    /// The key's project restriction.
    pub key_project_id: Option<&'a str>,
    /// The key's effective scopes.
    pub scopes: &'a [String],
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    /// Allowed.
    Allow,
    /// Denied with 403 or 404 (checked by the runtime).
    Deny {
        /// 403 or 404.
        status: u16,
        /// snake_case code such as `insufficient_scope`.
        code: String,
        /// Message for the caller.
        message: String,
        /// The scope that would have allowed it.
        required_scope: Option<String>,
    },
}

/// One entry of a policy's scope catalogue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeDescription {
    /// Scope name.
    pub name: String,
    /// What it allows.
    pub description: String,
}

/// What a policy says about itself (validated).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Scope catalogue.
    pub scopes: Vec<ScopeDescription>,
}

/// Something that decides scope-to-route. The Wasm [`Plugin`] is the real implementation; the
/// benchmarks also implement it natively to measure the sandbox's overhead.
pub trait ScopePolicy: Send + Sync {
    /// The policy's self-description.
    fn info(&self) -> &PolicyInfo;
    /// The names of every scope the policy defines (what a full-access key holds).
    fn scope_names(&self) -> &[String];
    /// Decides one request.
    fn authorize(&self, request: &PolicyRequest<'_>) -> Result<PolicyDecision, PluginError>;
}
