//! Hot reload of the deployment default policy (`policy = "path.wasm"` in the config): the file
//! is re-read when its modification time or size changes (checked every second) and on SIGHUP.
//! A new version is validated exactly like an upload; on failure the last good version stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::app::policies::Reloaded;
use crate::app::{App, AppError};
use crate::console::{Level, say};
use crate::policy::ScopePolicy;

/// How often the file is checked for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn reload(path: &Path, app: &Arc<App>, why: &str) {
    let p = path.to_path_buf();
    let reloaded = app
        .run(move |app| {
            let bytes = std::fs::read(&p).map_err(|e| AppError::InvalidPolicy(e.to_string()))?;
            app.reload_default_policy(&bytes)
        })
        .await;
    match reloaded {
        Ok(Reloaded::Changed(plugin)) => say(
            Level::Info,
            &format!(
                "policy: deployment default reloaded ({why}): {} {} sha256 {}",
                plugin.info().name,
                plugin.info().version,
                plugin.sha256_hex()
            ),
            &[],
        ),
        Ok(Reloaded::Unchanged(sha256)) => say(
            Level::Info,
            &format!("policy: deployment default unchanged ({why}): sha256 {sha256}"),
            &[],
        ),
        Err(e) => say(
            Level::Warn,
            &format!(
                "policy: reload of {} refused ({why}), keeping the last good version: {e}",
                path.display()
            ),
            &[],
        ),
    }
}

/// Watches `path` until the process ends.
pub fn spawn(path: PathBuf, app: Arc<App>) {
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
                reload(&path, &app, why).await;
            }
        }
    });
}
