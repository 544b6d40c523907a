//! The control socket: a Unix socket in the data directory (`control.sock`, mode 0600) through
//! which `billstack backup` asks the running server for a consistent copy of its store, since
//! the server holds the store's lock. Only someone who can reach the data directory, and so
//! could read the store anyway, can use it.
//!
//! Protocol: the client sends one line with a command; the server answers `OK` and the data,
//! or `ERR message`, then closes. Commands: `backup` (the data is the backup), and
//! `operator {json}`, an [`OperatorCommand`] that the server runs as the CLI would offline
//! (the data is its JSON answer), so `billstack team|project|user|key …` work while the
//! server runs. Both halves live here: the server's ([`spawn`]) and the client's
//! ([`fetch_backup`], [`send_command`]).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::App;
use crate::app::operator::OperatorCommand;

/// The longest command line accepted (a key's 64 scopes of 64 bytes fit many times over).
const MAX_LINE: u64 = 64 * 1024;

/// The socket's path in a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Listens on the data directory's control socket on a thread of its own. A socket left by a
/// server that died is replaced (the store's lock, held by now, proves no server uses it). If
/// the socket cannot be made (say the path is too long for a Unix socket), online backups are
/// unavailable and a warning says so; the server runs regardless.
pub fn spawn(app: Arc<App>, data_dir: &Path) {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no control socket; `billstack backup` works only while the server is stopped");
            return;
        }
    };
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict the control socket");
    }
    std::thread::Builder::new()
        .name("billstack-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = serve(&app, stream) {
                            tracing::warn!(error = %e, "control request failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                }
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot start the control thread"));
}

/// Connects to the control socket of the server holding `data_dir`.
fn connect(data_dir: &Path) -> anyhow::Result<UnixStream> {
    use anyhow::Context;
    let socket = socket_path(data_dir);
    UnixStream::connect(&socket).with_context(|| {
        format!(
            "the server holds {} but its control socket {} does not answer",
            data_dir.display(),
            socket.display()
        )
    })
}

/// The client half: asks the server holding `data_dir` for a backup through its control
/// socket and copies the whole answer to `out` (the caller checks it).
pub fn fetch_backup(data_dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let mut stream = connect(data_dir)?;
    stream.write_all(b"backup\n")?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.by_ref().take(256).read_line(&mut status)?;
    if status.trim() != "OK" {
        anyhow::bail!("the server refused the backup: {}", status.trim());
    }
    std::io::copy(&mut reader, out)?;
    Ok(())
}

/// The client half of `operator`: has the server holding `data_dir` run `command`, and
/// returns its JSON answer (or its refusal as the error).
pub fn send_command(
    data_dir: &Path,
    command: &OperatorCommand,
) -> anyhow::Result<serde_json::Value> {
    let mut stream = connect(data_dir)?;
    let mut line = b"operator ".to_vec();
    serde_json::to_writer(&mut line, command)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.by_ref().take(MAX_LINE).read_line(&mut status)?;
    match status.trim_end().strip_prefix("ERR ") {
        Some(message) => anyhow::bail!("{message}"),
        None if status.trim_end() == "OK" => {
            let mut body = String::new();
            reader.take(16 << 20).read_to_string(&mut body)?;
            Ok(serde_json::from_str(&body)?)
        }
        None => anyhow::bail!("the server answered {:?}", status.trim_end()),
    }
}

/// Whether a server answers on the data directory's control socket.
pub fn answers(data_dir: &Path) -> bool {
    UnixStream::connect(socket_path(data_dir)).is_ok()
}

/// Removes the socket at shutdown.
pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(data_dir));
}

fn serve(app: &App, stream: UnixStream) -> anyhow::Result<()> {
    let mut line = String::new();
    BufReader::new(Read::take(&stream, MAX_LINE)).read_line(&mut line)?;
    let mut out = BufWriter::new(&stream);
    if let Some(json) = line.trim().strip_prefix("operator ") {
        // The line may hold a password: it is parsed, never logged.
        let answer = match serde_json::from_str::<OperatorCommand>(json) {
            Ok(command) => {
                let name = command.name();
                command.execute(app).map_err(|e| {
                    tracing::info!(command = name, error = %e, "operator command refused");
                    e.to_string()
                })
            }
            Err(e) => Err(format!("not an operator command: {e}")),
        };
        match answer {
            Ok(value) => {
                out.write_all(b"OK\n")?;
                serde_json::to_writer(&mut out, &value)?;
                out.write_all(b"\n")?;
            }
            Err(message) => writeln!(out, "ERR {}", message.replace('\n', " "))?,
        }
        out.flush()?;
        return Ok(());
    }
    match line.trim() {
        "backup" => {
            out.write_all(b"OK\n")?;
            let summary = app.backup(&mut out)?;
            tracing::info!(
                entries = summary.entries,
                keys = summary.keys,
                bytes = summary.bytes,
                "online backup written"
            );
        }
        other => {
            let shown: String = other.chars().take(40).collect();
            writeln!(out, "ERR unknown command {shown:?}")?;
        }
    }
    out.flush()?;
    Ok(())
}
