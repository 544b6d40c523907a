//! `billstack backup`: a consistent copy of the store, offline or from the running server.

use super::*;

/// `billstack backup`: from the store itself when no server holds it, otherwise from the
/// server through its control socket; on PostgreSQL, from one consistent snapshot of the
/// database (servers keep running). Written to a temporary file, checked in full, synced,
/// then renamed into place, so FILE is either a complete backup or absent.
pub(super) fn backup(settings: &Settings, output: &std::path::Path) -> anyhow::Result<()> {
    let postgres = matches!(settings.storage, crate::config::StorageChoice::Postgres(_));
    if !postgres {
        check_data_dir(settings, StoreUse::Existing)?;
    }
    if output.exists() {
        bail!("{} already exists; choose a new file", output.display());
    }
    let partial = output.with_extension(format!("partial-{}", std::process::id()));
    let result = (|| -> anyhow::Result<bool> {
        // Mode 0600 from the first byte: a backup holds every key hash, password hash and
        // session hash of the deployment.
        let mut file = std::io::BufWriter::new(
            std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?,
        );
        if postgres {
            startup::open_storage(settings)?.backup_to(&mut file)?;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            return Ok(true);
        }
        let online = match Store::open(&settings.data_dir) {
            Ok(store) => {
                store.backup_to(&mut file)?;
                false
            }
            Err(billstack_keystore::Error::Locked(_)) => {
                crate::server::control::fetch_backup(&settings.data_dir, &mut file)?;
                true
            }
            Err(e) => return Err(e.into()),
        };
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(online)
    })();
    let online = match result {
        Ok(online) => online,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let checked = std::fs::File::open(&partial)
        .map_err(billstack_keystore::Error::from)
        .and_then(|f| billstack_keystore::verify_backup(std::io::BufReader::new(f)));
    let summary = match checked {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(anyhow::Error::new(e).context("the backup came out incomplete"));
        }
    };
    std::fs::rename(&partial, output)
        .with_context(|| format!("cannot move the backup to {}", output.display()))?;
    print_json(&json!({"output": output, "online": online, "backup": summary}))
}
