//! The Wasm sandbox for policy plugins.
//!
//! Narrows wasmtime to what a scope policy needs: the component model, an empty WASI context
//! (no files, no environment, no arguments, no stdio, no sockets, no name lookups), a memory cap
//! enforced by a resource limiter, and a per-call deadline enforced by epoch interruption. Any
//! trap, timeout, limit breach or malformed answer is an error, which the decision function turns
//! into a denial: a plugin can fail, but never open a door.
//!
//! Each distinct component is compiled once (in memory by SHA-256, and on disk keyed by SHA-256
//! and the engine's compatibility hash), and its `InstancePre` is built once. Requests reuse
//! warm instances from a per-plugin pool; a plugin loaded for one team is a separate [`Plugin`]
//! with its own pool, so instance state can never carry one team's request into another's.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, Policy, PolicyPre};
use super::{PolicyDecision, PolicyInfo, PolicyRequest, ScopeDescription, ScopePolicy};

mod engine;
mod errors;
mod plugin;
mod sandbox;
mod validate;

pub use engine::PolicyEngine;
pub use errors::{LoadError, PluginError};
use plugin::Gate;
pub use plugin::Plugin;
use sandbox::{Limiter, Sandbox, empty_wasi};
use validate::{validate_decision, validate_info};

/// Sandbox limits; one set per engine.
#[derive(Debug, Clone)]
pub struct PolicyLimits {
    /// Largest linear memory a plugin may grow to (default 16 MiB).
    pub memory_bytes: usize,
    /// Wall-clock budget for one call (default 10 ms), enforced by epoch interruption.
    pub deadline: Duration,
    /// Largest accepted component (default 32 MiB; JavaScript components are ~10 MiB).
    pub max_plugin_bytes: usize,
    /// Warm instances kept per plugin (default 16).
    pub pool_size: usize,
    /// Calls one team's own plugin may run at once (default: one fewer than the CPUs, at least
    /// one), so a slow team plugin can never occupy every core. Further calls wait their turn
    /// for up to [`PolicyLimits::queue_wait`], then fail closed.
    pub team_concurrency: usize,
    /// Longest a call waits for its team's turn (default 1 s).
    pub queue_wait: Duration,
}

fn default_team_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            memory_bytes: 16 << 20,
            deadline: Duration::from_millis(10),
            max_plugin_bytes: 32 << 20,
            pool_size: 16,
            team_concurrency: default_team_concurrency(),
            queue_wait: Duration::from_secs(1),
        }
    }
}

/// The epoch advances once per tick, so deadlines have this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// An instance is retired after this many calls, bounding what a long-lived instance can
/// accumulate (fragmented heap, leaked state).
const MAX_CALLS_PER_INSTANCE: u32 = 100_000;
/// An instance whose memories exceed this share (in percent) of the memory cap after a call is
/// retired rather than reused: a garbage-collected guest (JavaScript) grows its heap between
/// collections, and a reused instance would otherwise one day fail a request at the cap.
const RETIRE_AT_MEMORY_PERCENT: usize = 75;
/// Wasm stack budget; deep recursion traps here instead of exhausting the host thread's stack.
const MAX_WASM_STACK: usize = 512 << 10;
