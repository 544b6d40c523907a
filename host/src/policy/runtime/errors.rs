//! Why a plugin could not be loaded, and why one call into it failed; every one fails closed.

use super::*;

/// Why a component could not be loaded as a policy. Nothing is activated when this happens.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bigger than [`PolicyLimits::max_plugin_bytes`].
    #[error("the plugin is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Size of the upload.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary (no \\0asm header)")]
    NotWasm,
    /// A core module where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component: build it for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// wasmtime could not compile it.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// It imports something the sandbox does not provide.
    #[error("the component needs imports the sandbox does not provide: {0}")]
    Imports(String),
    /// It does not export the `billstack:policy` world.
    #[error("the component does not export the billstack:policy world: {0}")]
    WrongWorld(String),
    /// `info()` failed.
    #[error("info() failed: {0}")]
    Info(PluginError),
    /// `info()` answered something invalid.
    #[error("info() answered an invalid plugin description: {0}")]
    InvalidInfo(String),
}

/// Why one call into a plugin failed. Every variant fails closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The call ran past its deadline and was interrupted.
    #[error("the plugin ran past its {0:?} deadline")]
    Timeout(Duration),
    /// The plugin tried to grow memory beyond the cap.
    #[error("the plugin exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The plugin overflowed its stack.
    #[error("the plugin overflowed its stack")]
    StackOverflow,
    /// Any other trap (panic, unreachable, out-of-bounds access, ...).
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// The plugin answered something the contract does not allow.
    #[error("the plugin gave an invalid answer: {0}")]
    InvalidAnswer(String),
    /// A fresh instance could not be created.
    #[error("the plugin could not be instantiated: {0}")]
    Instantiate(String),
    /// The team's plugin was already running as many calls as it may, for too long.
    #[error("the plugin is busy: its concurrent-call limit stayed full")]
    Busy,
    /// The team's stored policy did not load (see [`crate::policy::BrokenPolicy`]); nothing
    /// ran. The team fails closed until an owner uploads, resets or rolls back.
    #[error("the team's policy did not load: {0}")]
    NotLoaded(String),
}

impl PluginError {
    /// A short label for metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            PluginError::Timeout(_) => "timeout",
            PluginError::MemoryLimit(_) => "memory_limit",
            PluginError::StackOverflow => "stack_overflow",
            PluginError::Trap(_) => "trap",
            PluginError::InvalidAnswer(_) => "invalid_answer",
            PluginError::Instantiate(_) => "instantiate",
            PluginError::Busy => "busy",
            PluginError::NotLoaded(_) => "not_loaded",
        }
    }
}
