//! Hot reload of the deployment default policy (`policy = "path.wasm"` in the config): the file
//! is re-read when its modification time or size changes (checked every second) and on SIGHUP.
//! A new version is validated exactly like an upload; on failure the last good version stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::console::{Level, say};
use crate::policy::{PolicyEngine, PolicySet, ScopePolicy};

/// How often the file is checked for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn reload(path: &Path, engine: &Arc<PolicyEngine>, policies: &Arc<PolicySet>, why: &str) {
    let (p, e) = (path.to_path_buf(), Arc::clone(engine));
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let bytes = std::fs::read(&p)?;
        Ok(e.load(&bytes)?)
    })
    .await;
    match loaded {
        Ok(Ok(plugin)) => {
            let previous = policies.default_policy().sha256_hex();
            if previous != plugin.sha256_hex() {
                let line = format!(
                    "policy: deployment default reloaded ({why}): {} {} sha256 {}",
                    plugin.info().name,
                    plugin.info().version,
                    plugin.sha256_hex()
                );
                // Switch first, then say so: whoever reads the line sees the new policy.
                policies.set_default(plugin);
                let (engine, live) = (Arc::clone(engine), policies.loaded_sha256s());
                let _ = tokio::task::spawn_blocking(move || engine.retain_compiled(&live)).await;
                say(Level::Info, &line, &[]);
            } else {
                say(
                    Level::Info,
                    &format!("policy: deployment default unchanged ({why}): sha256 {previous}"),
                    &[],
                );
            }
        }
        Ok(Err(e)) => say(
            Level::Warn,
            &format!(
                "policy: reload of {} refused ({why}), keeping the last good version: {e:#}",
                path.display()
            ),
            &[],
        ),
        Err(e) => say(
            Level::Error,
            &format!("policy: reload task failed: {e}"),
            &[],
        ),
    }
}

/// Watches `path` until the process ends.
pub fn spawn(path: PathBuf, engine: Arc<PolicyEngine>, policies: Arc<PolicySet>) {
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the policy file is still watched");
                None
            }
        };
        let mut last = fingerprint(&path);
        let mut tick = tokio::time::interval(POLL_EVERY);
        loop {
            let why = tokio::select! {
                _ = tick.tick() => "file changed",
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            };
            let now = fingerprint(&path);
            if why == "SIGHUP" || now != last {
                last = now;
                reload(&path, &engine, &policies, why).await;
            }
        }
    });
}
