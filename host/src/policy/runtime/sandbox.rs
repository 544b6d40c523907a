//! The per-store sandbox: an empty WASI context and a limiter that caps the sum of a plugin's memories.

use super::*;

/// Per-store state: the empty WASI context and the limiter.
pub(super) struct Sandbox {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `StoreLimits` plus the plugin's memory cap applied to the *sum* of its linear memories (a
/// component may have several; `StoreLimits` caps each one alone), the memory in use, and a
/// note of whether the cap was what stopped the plugin, so the error can say so.
pub(super) struct Limiter {
    pub(super) limits: StoreLimits,
    pub(super) memory_cap: usize,
    pub(super) memory_in_use: usize,
    pub(super) memory_breached: bool,
}

impl Limiter {
    pub(super) fn new(limits: StoreLimits, memory_cap: usize) -> Limiter {
        Limiter {
            limits,
            memory_cap,
            memory_in_use: 0,
            memory_breached: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_in_use
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_cap {
            self.memory_breached = true;
            wasmtime::bail!(
                "the plugin's memories would total {total} bytes, over its {}-byte limit",
                self.memory_cap
            );
        }
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_in_use = total;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

pub(super) fn empty_wasi() -> WasiCtx {
    // The builder starts with nothing: no preopened directories, no environment, no arguments,
    // and stdin/stdout/stderr connected to nothing. Sockets and name lookups are switched off
    // explicitly.
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}
