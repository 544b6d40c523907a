//! Throwaway PostgreSQL clusters for the tests: each [`PgCluster`] is its own server on a free
//! loopback port, in its own directory, stopped and deleted when dropped, so no test depends on
//! a server someone else started.
//!
//! `initdb` runs once per test process into a template directory (about 1 s); each cluster
//! copies it and starts its own `postgres` (about 0.15 s). `initdb` and `postgres` refuse to run
//! as root, so when the tests run as root every step runs as the `postgres` user
//! (`runuser -u postgres`), on directories that user owns. The server runs with `fsync=off`
//! (the tests kill processes, never the machine, and the page cache survives a process) but
//! with `synchronous_commit` on: a commit is in the WAL before it is acknowledged, so
//! [`PgCluster::kill`] (a crash of PostgreSQL) loses nothing that was acknowledged.
//!
//! [`PgCluster::start`] answers `None` when no PostgreSQL is installed (Debian's `postgresql`
//! package: `.ci/run` installs it), so a test can say it was skipped; set
//! `BILLSTACK_REQUIRE_POSTGRES=1` (as `.ci/run` does) to make that a failure instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The role the tests connect as (a superuser of the throwaway cluster, trust auth on loopback).
pub const USER: &str = "billstack";

/// A running throwaway cluster.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// Server options beyond the defaults (TLS), kept for restarts.
    extra: String,
    databases: std::sync::atomic::AtomicUsize,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, or `pg_config --bindir`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `program args` (as the postgres user when `as_postgres`), failing with its output.
fn run(as_postgres: bool, program: &Path, args: &[&str]) -> Result<Output, String> {
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{} {}: {}\n{}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A directory the postgres user may write (a fresh temporary one, handed over when root).
fn owned_dir(as_postgres: bool) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("billstack-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    if as_postgres {
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("chown postgres {}", dir.path().display()));
        }
    }
    Ok(dir)
}

/// Runs `then` (a shell command) once this process has ended, from a watcher process: for
/// what a process-wide value holds, which is never dropped.
fn when_this_process_ends(then: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {then}",
        pid = std::process::id()
    );
    // Never waited for on purpose: it outlives this process (init reaps it).
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a watcher");
}

/// The initdb'd template of this process (made once, deleted when the process ends).
fn template(bin: &Path, as_postgres: bool) -> Result<&'static Path, String> {
    static TEMPLATE: OnceLock<Result<(tempfile::TempDir, PathBuf), String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = owned_dir(as_postgres)?;
            when_this_process_ends(&format!("rm -rf {} >/dev/null 2>&1", dir.path().display()));
            let data = dir.path().join("template");
            let data_text = data.to_str().ok_or("non-UTF-8 temporary directory")?;
            run(
                as_postgres,
                &bin.join("initdb"),
                &[
                    "-D",
                    data_text,
                    "-U",
                    USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )?;
            Ok((dir, data))
        })
        .as_ref()
        .map(|(_, data)| data.as_path())
        .map_err(Clone::clone)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgCluster {
    /// Starts a new cluster, or `None` when PostgreSQL is not installed (a failure instead
    /// when `BILLSTACK_REQUIRE_POSTGRES` is set). Panics when it is installed but will not start.
    pub fn start() -> Option<PgCluster> {
        PgCluster::start_with(None)
    }

    /// [`PgCluster::start`] with TLS on: the server presents `cert_pem` (a PEM chain) with
    /// `key_pem` and accepts TLS connections (plain ones too).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<PgCluster> {
        PgCluster::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Option<PgCluster> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("BILLSTACK_REQUIRE_POSTGRES").is_none(),
                "BILLSTACK_REQUIRE_POSTGRES is set but no PostgreSQL is installed \
                 (apt-get install postgresql; .ci/run does this)"
            );
            return None;
        };
        let as_postgres = running_as_root();
        let template = template(&bin, as_postgres).unwrap_or_else(|e| panic!("initdb: {e}"));
        let dir = owned_dir(as_postgres).unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().join("data");
        let extra = match tls {
            None => String::new(),
            Some((cert, key)) => {
                let (cert_path, key_path) =
                    (dir.path().join("server.crt"), dir.path().join("server.key"));
                std::fs::write(&cert_path, cert).expect("write the certificate");
                std::fs::write(&key_path, key).expect("write the key");
                // PostgreSQL refuses a key others can read, or one it does not own.
                let status = Command::new("chmod")
                    .arg("600")
                    .arg(&key_path)
                    .status()
                    .expect("chmod");
                assert!(status.success(), "chmod the key");
                if as_postgres {
                    let status = Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(&cert_path)
                        .arg(&key_path)
                        .status()
                        .expect("chown");
                    assert!(status.success(), "chown the key");
                }
                format!(
                    " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                    cert_path.display(),
                    key_path.display()
                )
            }
        };
        let (data_text, template_text) = (
            data.to_str().expect("UTF-8 path"),
            template.to_str().expect("UTF-8 path"),
        );
        run(
            as_postgres,
            Path::new("cp"),
            &["-a", template_text, data_text],
        )
        .unwrap_or_else(|e| panic!("copy the template: {e}"));
        // A port found free may be taken before the server binds it: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c full_page_writes=off -c max_connections=200{extra}",
                dir.path().display()
            );
            let log = dir.path().join("server.log");
            match run(
                as_postgres,
                &bin.join("pg_ctl"),
                &[
                    "-D",
                    data_text,
                    "-o",
                    &options,
                    "-l",
                    log.to_str().expect("UTF-8 path"),
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
            ) {
                Ok(_) => {
                    return Some(PgCluster {
                        bin,
                        dir,
                        port,
                        as_postgres,
                        extra,
                        databases: std::sync::atomic::AtomicUsize::new(0),
                    });
                }
                Err(e) => {
                    last_error =
                        format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        }
        panic!("PostgreSQL did not start: {last_error}");
    }

    /// A cluster for the whole test process, started on first use and shared; it is stopped
    /// and deleted when the process ends (a watcher process waits for it to exit), since a
    /// process-wide value is never dropped. `None` as for [`PgCluster::start`].
    pub fn for_this_process() -> Option<&'static PgCluster> {
        static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let cluster = PgCluster::start()?;
                let data = cluster.dir.path().join("data");
                let pg_ctl = cluster.bin.join("pg_ctl");
                let stop = if cluster.as_postgres {
                    format!(
                        "runuser -u postgres -- {} -D {} -m immediate stop",
                        pg_ctl.display(),
                        data.display()
                    )
                } else {
                    format!(
                        "{} -D {} -m immediate stop",
                        pg_ctl.display(),
                        data.display()
                    )
                };
                when_this_process_ends(&format!(
                    "{stop} >/dev/null 2>&1; rm -rf {}",
                    cluster.dir.path().display()
                ));
                Some(cluster)
            })
            .as_ref()
    }

    /// A database of this cluster named after `key` (created on first use, then the same).
    pub fn database_for(&self, key: &str) -> String {
        static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let name: String = format!(
            "t_{}",
            key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        );
        let mut made = MADE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !made.contains(&name) {
            let port = self.port.to_string();
            run(
                false,
                &self.bin.join("createdb"),
                &["-h", "127.0.0.1", "-p", &port, "-U", USER, &name],
            )
            .unwrap_or_else(|e| panic!("createdb: {e}"));
            made.push(name.clone());
        }
        self.url(&name)
    }

    /// The directory holding the cluster's files (its data directory is `data` below it), for
    /// tests that search what is stored at rest.
    pub fn directory(&self) -> &Path {
        self.dir.path()
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn new_database(&self) -> String {
        let n = self
            .databases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("test_{n}");
        let port = self.port.to_string();
        run(
            false,
            &self.bin.join("createdb"),
            &["-h", "127.0.0.1", "-p", &port, "-U", USER, &name],
        )
        .unwrap_or_else(|e| panic!("createdb: {e}"));
        self.url(&name)
    }

    /// Runs `sql` in `database` with `psql` and returns its output, unaligned, tuples only
    /// (panics when psql fails).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = run(
            false,
            &self.bin.join("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                USER,
                "-d",
                database,
                "-XtAc",
                sql,
            ],
        )
        .unwrap_or_else(|e| panic!("psql: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server at once (as a crash would: no shutdown checkpoint), keeping its files.
    pub fn kill(&self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// Starts the server again on the same port after [`PgCluster::kill`]; waits until it
    /// accepts connections.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=200{}",
            self.port,
            self.dir.path().display(),
            self.extra
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_str().expect("UTF-8 path").to_owned();
        self.pg_ctl(&["-o", &options, "-l", &log, "-w", "-t", "30", "start"])
            .unwrap_or_else(|e| panic!("restart: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let data = self.dir.path().join("data");
        let mut all = vec!["-D", data.to_str().expect("UTF-8 path")];
        all.extend_from_slice(args);
        run(self.as_postgres, &self.bin.join("pg_ctl"), &all)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_answers_and_stops() {
        let Some(cluster) = PgCluster::start() else {
            eprintln!("PostgreSQL is not installed: skipped");
            return;
        };
        let url = cluster.new_database();
        assert!(url.starts_with("postgres://billstack@127.0.0.1:"), "{url}");
        let port = cluster.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let second = PgCluster::start().expect("a second cluster");
        assert_ne!(second.port(), port, "each cluster has its own port");
        cluster.kill();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        cluster.restart();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(cluster);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "stopped when dropped"
        );
    }
}
