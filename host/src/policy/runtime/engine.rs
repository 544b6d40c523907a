//! The compiler and linker shared by every plugin: the compile cache (memory and disk), the epoch ticker, and loading (validation included).

use super::*;

/// The compiler and linker for plugins, shared by every plugin of a process.
pub struct PolicyEngine {
    pub(super) engine: Engine,
    pub(super) linker: Linker<Sandbox>,
    pub(super) limits: PolicyLimits,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) engine_hash: String,
    /// Recently compiled components by SHA-256, so reloading or re-uploading the same bytes is
    /// instant. Bounded by [`COMPILED_IN_MEMORY`]: active plugins hold their own reference.
    pub(super) compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Held while compiling: one compilation at a time, so a burst of uploads neither
    /// multiplies peak memory nor takes every core from decisions.
    pub(super) compiling: Mutex<()>,
}

/// How many compiled components [`PolicyEngine`] keeps for reuse beyond the active ones.
pub(super) const COMPILED_IN_MEMORY: usize = 16;

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("limits", &self.limits)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl PolicyEngine {
    /// Creates the engine. `cache_dir` holds compiled plugins between runs; `None` keeps them
    /// in memory only. The directory is made when the first compiled plugin is written, and
    /// only inside a parent that exists (the data directory), so an engine touches no disk
    /// until a store is there.
    pub fn new(
        limits: PolicyLimits,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Arc<PolicyEngine>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(MAX_WASM_STACK);
        let engine = Engine::new(&config)?;
        spawn_epoch_ticker(engine.weak());

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());

        Ok(Arc::new(PolicyEngine {
            engine,
            linker,
            limits,
            cache_dir,
            engine_hash,
            compiled: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
        }))
    }

    /// The limits plugins run under.
    pub fn limits(&self) -> &PolicyLimits {
        &self.limits
    }

    /// Validates and loads a component: size cap, compiles (or reuses the compiled artefact),
    /// checks imports and exports against the world, and calls `info()` under the sandbox
    /// limits. CPU-heavy on a cache miss (compilation): call off any async executor.
    pub fn load(self: &Arc<Self>, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        self.load_with(bytes, None)
    }

    /// [`PolicyEngine::load`] for one team's own plugin: its calls are bounded by
    /// [`PolicyLimits::team_concurrency`], and its instances serve that team only.
    pub fn load_for_team(self: &Arc<Self>, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        self.load_with(bytes, Some(self.limits.team_concurrency))
    }

    pub(super) fn load_with(
        self: &Arc<Self>,
        bytes: &[u8],
        concurrency: Option<usize>,
    ) -> Result<Arc<Plugin>, LoadError> {
        if bytes.len() > self.limits.max_plugin_bytes {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                max: self.limits.max_plugin_bytes,
            });
        }
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        let component = self.component(&sha, bytes)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports(format!("{e:#}")))?;
        let pre =
            PolicyPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;

        let plugin = Plugin {
            engine: Arc::clone(self),
            pre,
            sha256: sha,
            size: bytes.len(),
            info: PolicyInfo {
                name: String::new(),
                version: String::new(),
                scopes: Vec::new(),
            },
            scope_names: Vec::new(),
            memory_at_start: 0,
            pool: Mutex::new(Vec::new()),
            gate: Gate::new(concurrency),
        };
        let warm = plugin.instantiate().map_err(LoadError::Info)?;
        let memory_at_start = warm.store.data().limiter.memory_in_use;
        let raw = plugin
            .call_on(warm, &|policy, store| policy.call_info(store))
            .map_err(LoadError::Info)?;
        let info = validate_info(raw).map_err(LoadError::InvalidInfo)?;
        if memory_at_start > self.limits.memory_bytes / 100 * RETIRE_AT_MEMORY_PERCENT {
            tracing::warn!(
                plugin = %info.name,
                memory_at_start,
                memory_limit = self.limits.memory_bytes,
                "the plugin starts close to its memory limit, so its instances are rarely reused; raise plugin_memory_mib"
            );
        }
        let scope_names = info.scopes.iter().map(|s| s.name.clone()).collect();
        Ok(Arc::new(Plugin {
            info,
            scope_names,
            memory_at_start,
            ..plugin
        }))
    }

    pub(super) fn component(&self, sha: &[u8; 32], bytes: &[u8]) -> Result<Component, LoadError> {
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha)
        {
            return Ok(c.clone());
        }
        check_header(bytes)?;
        let _compiling = self.compiling.lock().unwrap_or_else(|e| e.into_inner());
        let cache_file = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{}.cwasm", hex::encode(sha), self.engine_hash)));
        let component = match cache_file.as_deref().and_then(|p| self.load_cached(p)) {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
                if let Some(path) = &cache_file
                    && let Err(e) = store_cached(&c, path)
                {
                    tracing::warn!(path = %path.display(), error = %e, "could not write the plugin compile cache");
                }
                c
            }
        };
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if compiled.len() >= COMPILED_IN_MEMORY {
            // Which ones go hardly matters: a miss costs a read of the disk cache.
            compiled.clear();
        }
        compiled.insert(*sha, component.clone());
        Ok(component)
    }

    pub(super) fn load_cached(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the file name, and wasmtime checks it again), into the
        // data directory, which only the operator controls: the same trust as the binary.
        // Read into memory rather than mmap the file: a mapped file truncated underneath us
        // (a full disk, an operator cleaning up) would crash the process with SIGBUS.
        let bytes = std::fs::read(path).ok()?;
        #[allow(unsafe_code)]
        let result = unsafe { Component::deserialize(&self.engine, &bytes) };
        match result {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable compile cache entry");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Forgets every compiled component whose SHA-256 is not in `live`, in memory and in the
    /// on-disk cache (with any entry of another engine version, and temporary files a crash
    /// left), so the cache holds what the active policies use and no more. Returns how many
    /// cache files it deleted.
    pub fn retain_compiled(&self, live: &std::collections::HashSet<[u8; 32]>) -> usize {
        self.retain_compiled_older_than(live, std::time::Duration::ZERO)
    }

    /// [`PolicyEngine::retain_compiled`], keeping cache files written within `grace`: for a
    /// pruner that runs beside uploads it does not know of (a replica following another
    /// replica's changes), so it never deletes the file an upload here has just compiled and
    /// not yet activated. A later prune removes them once they are old and unused.
    pub fn retain_compiled_older_than(
        &self,
        live: &std::collections::HashSet<[u8; 32]>,
        grace: std::time::Duration,
    ) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|sha, _| live.contains(sha));
        let Some(dir) = &self.cache_dir else {
            return 0;
        };
        // Holding the compile lock: a compilation never writes a file that is then judged by
        // a listing taken before it.
        let _compiling = self.compiling.lock().unwrap_or_else(|e| e.into_inner());
        let keep: std::collections::HashSet<String> = live
            .iter()
            .map(|sha| format!("{}-{}.cwasm", hex::encode(sha), self.engine_hash))
            .collect();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut deleted = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let recent = !grace.is_zero()
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_none_or(|age| age < grace);
            if name.to_str().is_some_and(|n| !keep.contains(n))
                && entry.file_type().is_ok_and(|t| t.is_file())
                && !recent
            {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => deleted += 1,
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "could not prune the plugin compile cache")
                    }
                }
            }
        }
        deleted
    }

    /// Whether a compiled artefact for these bytes is in the on-disk cache.
    pub fn is_cached_on_disk(&self, bytes: &[u8]) -> bool {
        let sha = Sha256::digest(bytes);
        self.cache_dir.as_ref().is_some_and(|d| {
            d.join(format!("{}-{}.cwasm", hex::encode(sha), self.engine_hash))
                .exists()
        })
    }
}

pub(super) fn store_cached(component: &Component, path: &Path) -> anyhow::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    if !dir.parent().is_some_and(Path::is_dir) {
        return Ok(()); // no data directory (yet): keep it in memory only
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(super) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Core modules are version 1, layer 0; components carry layer 1 in bytes 6..8.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Advances every engine's epoch once per tick. Holds only a weak handle, so the thread ends
/// when the engine is dropped.
pub(super) fn spawn_epoch_ticker(engine: wasmtime::EngineWeak) {
    let spawned = std::thread::Builder::new()
        .name("policy-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Without the ticker no deadline would ever fire; refuse to run plugins at all.
        panic!("cannot start the policy deadline thread: {e}");
    }
}
