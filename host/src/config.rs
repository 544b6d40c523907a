//! `billstack.toml` and its `BILLSTACK_*` environment overrides.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::policy::PolicyLimits;

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./billstack-data";
/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The config file read when present and none is named.
pub const DEFAULT_CONFIG: &str = "billstack.toml";

/// The config file. Every field is optional; unknown keys are an error so a typo never silently
/// falls back to a default.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Data directory (sled store, compile cache). Default `./billstack-data`.
    pub data_dir: Option<PathBuf>,
    /// Where the records live: absent for the sled store in the data directory, or a
    /// `postgres://user:password@host:port/database` URL (add `?sslmode=require` for TLS).
    pub storage: Option<String>,
    /// PEM certificates to trust for TLS to PostgreSQL besides the Mozilla roots.
    pub storage_ca: Option<PathBuf>,
    /// With PostgreSQL: how long a replica may decide from its cache after it last confirmed
    /// the change feed (ms). Default 1000; 600 to 60000.
    pub replica_lease_ms: Option<u64>,
    /// Upstream base URL for reverse-proxy mode, e.g. `http://127.0.0.1:9000`. Default: none.
    pub upstream: Option<String>,
    /// Forward the client's `Authorization` header to the upstream. Default `false`.
    pub forward_authorization: Option<bool>,
    /// Mark the session cookie `Secure`. Default `false` (set it behind TLS).
    pub cookie_secure: Option<bool>,
    /// Path of a policy component that replaces the embedded default. Default: the embedded one.
    /// A relative path is relative to the config file's directory.
    pub policy: Option<PathBuf>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed (for the audit log's
    /// source addresses and per-address throttling). Default: none.
    pub trusted_proxies: Option<Vec<String>>,
    /// Sandbox limits for policy plugins.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Throttling of clients that present keys that do not authenticate.
    #[serde(default)]
    pub throttle: ThrottleConfig,
    /// Serve HTTPS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The directory of the file this was read from (relative paths in it resolve there).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// `[tls]` in the config file: both or neither.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// Where the server's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[throttle]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed keys one client address may present per window before it gets 429 (keys already
    /// in memory still work). Default 100.
    pub unknown_keys_per_address: Option<u32>,
    /// The window in seconds. Default 60.
    pub window_seconds: Option<u64>,
}

/// Default of `throttle.unknown_keys_per_address`.
pub const DEFAULT_UNKNOWN_KEYS_PER_ADDRESS: u32 = 100;
/// Default of `throttle.window_seconds`.
pub const DEFAULT_THROTTLE_WINDOW_SECONDS: u64 = 60;

/// `[limits]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory cap per plugin instance in MiB. Default 16.
    pub plugin_memory_mib: Option<u64>,
    /// Deadline per plugin call in milliseconds. Default 10.
    pub plugin_deadline_ms: Option<u64>,
    /// Largest accepted plugin in MiB. Default 32.
    pub plugin_max_mib: Option<u64>,
    /// Warm instances kept per plugin. Default 16.
    pub plugin_pool_size: Option<usize>,
    /// Calls one team's uploaded plugin may run at once. Default: CPUs − 1 (at least 1).
    pub plugin_team_concurrency: Option<usize>,
}

/// Where the records live.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageChoice {
    /// The embedded sled store in the data directory (the default).
    Sled,
    /// A PostgreSQL database, by URL (it may hold a password: never print it as is).
    Postgres(String),
}

impl std::fmt::Debug for StorageChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageChoice::Sled => f.write_str("Sled"),
            StorageChoice::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&billstack_keystore::pg::redact_url(url))
                .finish(),
        }
    }
}

impl StorageChoice {
    /// `storage` as written in the file or `BILLSTACK_STORAGE`: `sled` (or nothing) or a
    /// PostgreSQL URL.
    pub fn parse(text: Option<&str>) -> anyhow::Result<StorageChoice> {
        match text.map(str::trim) {
            None | Some("") | Some("sled") => Ok(StorageChoice::Sled),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StorageChoice::Postgres(url.to_owned()))
            }
            Some(other) => bail!(
                "storage {:?} must be \"sled\" or a postgres:// URL",
                billstack_keystore::pg::redact_url(other)
            ),
        }
    }
}

/// Settings after the file, the environment and the command line are combined.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where the records live.
    pub storage: StorageChoice,
    /// Extra trusted certificates for TLS to PostgreSQL.
    pub storage_ca: Option<PathBuf>,
    /// A replica's lease on its cache (PostgreSQL only).
    pub replica_lease: Duration,
    /// Upstream for the reverse proxy.
    pub upstream: Option<String>,
    /// Forward `Authorization` to the upstream.
    pub forward_authorization: bool,
    /// `Secure` cookies.
    pub cookie_secure: bool,
    /// Deployment default policy file, if not the embedded one.
    pub policy: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Failed keys per client address per [`Settings::throttle_window`].
    pub unknown_keys_per_address: u32,
    /// The throttle's window.
    pub throttle_window: Duration,
    /// HTTPS, when configured.
    pub tls: Option<TlsFiles>,
    /// Sandbox limits.
    pub limits: PolicyLimits,
}

/// The values given on the command line (or their environment variables, which clap reads).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config` / `BILLSTACK_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--listen` / `BILLSTACK_LISTEN`.
    pub listen: Option<String>,
    /// `--data-dir` / `BILLSTACK_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
}

/// The log filter from `BILLSTACK_LOG` (default `info`), in tracing's `EnvFilter` syntax:
/// comma-separated `LEVEL` or `TARGET=LEVEL` directives. A value that is not one is an error,
/// not a silently different filter: `EnvFilter` alone would read `verbose` as "everything from
/// a module named verbose" and so log almost nothing.
pub fn log_filter(value: Option<String>) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let Some(text) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(tracing_subscriber::EnvFilter::new("info"));
    };
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() => level,
            Some(_) => bail!("BILLSTACK_LOG={text:?}: {directive:?} names no target"),
            None if directive.contains("::") || directive.contains('[') => continue,
            None => directive,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            bail!(
                "BILLSTACK_LOG={text:?}: {level:?} is not a level (trace, debug, info, warn, error or off; e.g. BILLSTACK_LOG=debug or info,billstack_host=debug)"
            );
        }
    }
    tracing_subscriber::EnvFilter::try_new(&text)
        .with_context(|| format!("BILLSTACK_LOG={text:?} is not a log filter"))
}

/// A listen address: `IP:PORT`, or `HOST:PORT` with a name resolved once now (`localhost:8080`
/// listens on the first address `localhost` has, as `127.0.0.1:8080` would).
fn parse_listen(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let shape = || format!("listen address {text:?} is not host:port (e.g. 127.0.0.1:8080)");
    let (host, port) = text.rsplit_once(':').with_context(shape)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!(shape());
    }
    let mut addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .with_context(|| format!("listen address {text:?}: cannot resolve {host:?}"))?
        .collect();
    // The IPv4 address first, as people who write `localhost` usually mean 127.0.0.1.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .with_context(|| format!("listen address {text:?}: {host:?} has no address"))
}

/// A trusted proxy: one address (`10.0.0.2`, `::1`) or a CIDR range (`10.0.0.0/8`).
fn parse_trusted_proxy(text: &str) -> anyhow::Result<IpNet> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text.parse().with_context(|| {
        format!("trusted proxy {text:?} is not an IP address or CIDR range (e.g. 127.0.0.1 or 10.0.0.0/8)")
    })?;
    if net.trunc() != net {
        bail!(
            "trusted proxy {text:?} has host bits set; did you mean {}?",
            net.trunc()
        );
    }
    Ok(net)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_bool(name: &str, value: &str) -> anyhow::Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!("{name}={value:?} is not a boolean (true or false)"),
    }
}

/// The shortest lease: two polls of the feed and a margin.
const MIN_REPLICA_LEASE_MS: u64 = 600;
/// The longest lease: a revocation may take this long to hold on a replica that lost the
/// database.
const MAX_REPLICA_LEASE_MS: u64 = 60_000;

fn env_u64(name: &str) -> anyhow::Result<Option<u64>> {
    env_var(name)
        .map(|v| {
            v.parse()
                .with_context(|| format!("{name}={v:?} is not a whole number"))
        })
        .transpose()
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut file: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        file.base_dir = Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        );
        Ok(file)
    }
}

impl Settings {
    /// Combines, in rising priority: defaults, the config file, `BILLSTACK_*` variables, flags.
    pub fn resolve(overrides: &Overrides) -> anyhow::Result<Settings> {
        let file = match &overrides.config {
            Some(path) => FileConfig::read(path)?,
            None if Path::new(DEFAULT_CONFIG).is_file() => {
                FileConfig::read(Path::new(DEFAULT_CONFIG))?
            }
            None => FileConfig::default(),
        };
        Settings::from_file(file, overrides)
    }

    fn from_file(file: FileConfig, overrides: &Overrides) -> anyhow::Result<Settings> {
        let listen_text = overrides
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = parse_listen(&listen_text)?;
        let data_dir = overrides
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let storage =
            StorageChoice::parse(env_var("BILLSTACK_STORAGE").or(file.storage).as_deref())?;
        let storage_ca = env_var("BILLSTACK_STORAGE_CA")
            .map(PathBuf::from)
            .or(file.storage_ca);
        let replica_lease_ms = env_u64("BILLSTACK_REPLICA_LEASE_MS")?
            .or(file.replica_lease_ms)
            .unwrap_or(billstack_keystore::pg::DEFAULT_LEASE_MS);
        if !(MIN_REPLICA_LEASE_MS..=MAX_REPLICA_LEASE_MS).contains(&replica_lease_ms) {
            bail!(
                "replica_lease_ms = {replica_lease_ms} is out of range: it must be \
                 {MIN_REPLICA_LEASE_MS} to {MAX_REPLICA_LEASE_MS} (the feed is polled every 250 ms)"
            );
        }
        let replica_lease = Duration::from_millis(replica_lease_ms);
        let upstream = env_var("BILLSTACK_UPSTREAM").or(file.upstream);
        if let Some(u) = &upstream
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("upstream {u:?} must be an http:// or https:// URL");
        }
        let forward_authorization = match env_var("BILLSTACK_FORWARD_AUTHORIZATION") {
            Some(v) => parse_bool("BILLSTACK_FORWARD_AUTHORIZATION", &v)?,
            None => file.forward_authorization.unwrap_or(false),
        };
        let tls = match (
            env_var("BILLSTACK_TLS_CERT")
                .map(PathBuf::from)
                .or(file.tls.cert),
            env_var("BILLSTACK_TLS_KEY")
                .map(PathBuf::from)
                .or(file.tls.key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("tls.cert and tls.key go together: set both, or neither for plain HTTP"),
        };
        let cookie_secure = match env_var("BILLSTACK_COOKIE_SECURE") {
            Some(v) => parse_bool("BILLSTACK_COOKIE_SECURE", &v)?,
            None => file.cookie_secure.unwrap_or(false),
        };
        if tls.is_some() && file.cookie_secure == Some(false) {
            bail!(
                "cookie_secure = false cannot be combined with tls: over HTTPS the session cookie is always Secure"
            );
        }
        // Over HTTPS the session cookie never travels in clear.
        let cookie_secure = cookie_secure || tls.is_some();
        // From the environment, relative to the working directory, as a shell user expects;
        // from the file, relative to the file, so the file works from any directory.
        let policy = env_var("BILLSTACK_POLICY").map(PathBuf::from).or_else(|| {
            file.policy.map(|p| match &file.base_dir {
                Some(base) if p.is_relative() => base.join(p),
                _ => p,
            })
        });
        let trusted_proxies = match env_var("BILLSTACK_TRUSTED_PROXIES") {
            Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
            None => file.trusted_proxies.unwrap_or_default(),
        }
        .iter()
        .map(|text| parse_trusted_proxy(text))
        .collect::<anyhow::Result<Vec<IpNet>>>()?;

        let unknown_keys_per_address = env_u64("BILLSTACK_UNKNOWN_KEYS_PER_ADDRESS")?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
            .or(file.throttle.unknown_keys_per_address)
            .unwrap_or(DEFAULT_UNKNOWN_KEYS_PER_ADDRESS);
        let throttle_window = Duration::from_secs(
            env_u64("BILLSTACK_THROTTLE_WINDOW_SECONDS")?
                .or(file.throttle.window_seconds)
                .unwrap_or(DEFAULT_THROTTLE_WINDOW_SECONDS),
        );

        let defaults = PolicyLimits::default();
        let memory_mib = env_u64("BILLSTACK_PLUGIN_MEMORY_MIB")?.or(file.limits.plugin_memory_mib);
        let deadline_ms =
            env_u64("BILLSTACK_PLUGIN_DEADLINE_MS")?.or(file.limits.plugin_deadline_ms);
        let max_mib = env_u64("BILLSTACK_PLUGIN_MAX_MIB")?.or(file.limits.plugin_max_mib);
        let pool = env_u64("BILLSTACK_PLUGIN_POOL_SIZE")?
            .map(|v| v as usize)
            .or(file.limits.plugin_pool_size);
        let team_concurrency = env_u64("BILLSTACK_PLUGIN_TEAM_CONCURRENCY")?
            .map(|v| v as usize)
            .or(file.limits.plugin_team_concurrency);
        let limits = PolicyLimits {
            memory_bytes: memory_mib.map_or(defaults.memory_bytes, |m| (m as usize) << 20),
            deadline: deadline_ms.map_or(defaults.deadline, Duration::from_millis),
            max_plugin_bytes: max_mib.map_or(defaults.max_plugin_bytes, |m| (m as usize) << 20),
            pool_size: pool.unwrap_or(defaults.pool_size),
            team_concurrency: team_concurrency.unwrap_or(defaults.team_concurrency),
            queue_wait: defaults.queue_wait,
        };
        let settings = Settings {
            listen,
            data_dir,
            storage,
            storage_ca,
            replica_lease,
            upstream,
            forward_authorization,
            cookie_secure,
            policy,
            trusted_proxies,
            unknown_keys_per_address,
            throttle_window,
            tls,
            limits,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks ranges that the types alone do not.
    pub fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        if !(1 << 20..=4 << 30).contains(&l.memory_bytes) {
            bail!("plugin_memory_mib must be between 1 and 4096");
        }
        if l.deadline < Duration::from_millis(1) || l.deadline > Duration::from_secs(10) {
            bail!("plugin_deadline_ms must be between 1 and 10000");
        }
        if !(1 << 20..=256 << 20).contains(&l.max_plugin_bytes) {
            bail!("plugin_max_mib must be between 1 and 256");
        }
        if !(1..=1024).contains(&l.pool_size) {
            bail!("plugin_pool_size must be between 1 and 1024");
        }
        if !(1..=1024).contains(&l.team_concurrency) {
            bail!("plugin_team_concurrency must be between 1 and 1024");
        }
        if !(1..=1_000_000).contains(&self.unknown_keys_per_address) {
            bail!("throttle.unknown_keys_per_address must be between 1 and 1000000");
        }
        if !(1..=86_400).contains(&self.throttle_window.as_secs()) {
            bail!("throttle.window_seconds must be between 1 and 86400");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err =
            toml::from_str::<FileConfig>("[limits]\nplugin_memory = 3\n").expect_err("unknown key");
        assert!(err.to_string().contains("plugin_memory"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_limits_are_checked() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9\"\ndata_dir = \"/tmp/x\"\n[limits]\nplugin_memory_mib = 32\nplugin_deadline_ms = 20\n",
        )
        .expect("parses");
        let s = Settings::from_file(
            file.clone(),
            &Overrides {
                listen: Some("127.0.0.1:0".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.limits.memory_bytes, 32 << 20);
        assert_eq!(s.limits.deadline, Duration::from_millis(20));
        let bad: FileConfig = toml::from_str("[limits]\nplugin_deadline_ms = 0\n").expect("parses");
        assert!(Settings::from_file(bad, &Overrides::default()).is_err());
        let bad: FileConfig = toml::from_str("listen = \"nope\"\n").expect("parses");
        assert!(Settings::from_file(bad, &Overrides::default()).is_err());
        for bad in [
            "localhost",
            "localhost:",
            ":8080",
            "localhost:99999",
            "localhost:http",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_filters_are_levels_or_target_levels() {
        for good in [
            None,
            Some(""),
            Some("debug"),
            Some("WARN"),
            Some("info,billstack_host=debug"),
            Some("billstack_host::server=trace"),
        ] {
            assert!(log_filter(good.map(str::to_string)).is_ok(), "{good:?}");
        }
        for bad in [
            "verbose",
            "info,billstack_host=loud",
            "=debug",
            "info,chatty",
        ] {
            let err = log_filter(Some(bad.to_string())).expect_err(bad);
            assert!(format!("{err:#}").contains("BILLSTACK_LOG"), "{err:#}");
        }
    }

    #[test]
    fn a_listen_address_may_name_a_host() {
        let addr = parse_listen("localhost:8080").expect("localhost resolves");
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 8080);
        assert_eq!(
            parse_listen("[::1]:0").expect("v6"),
            "[::1]:0".parse::<SocketAddr>().expect("addr")
        );
    }

    #[test]
    fn the_throttle_is_checked_both_ways() {
        let ok: FileConfig =
            toml::from_str("[throttle]\nunknown_keys_per_address = 1\nwindow_seconds = 86400\n")
                .expect("parses");
        let s = Settings::from_file(ok, &Overrides::default()).expect("valid");
        assert_eq!(s.unknown_keys_per_address, 1);
        assert_eq!(s.throttle_window, Duration::from_secs(86_400));
        for bad in [
            "[throttle]\nunknown_keys_per_address = 0\n",
            "[throttle]\nwindow_seconds = 0\n",
            "[throttle]\nwindow_seconds = 86401\n",
        ] {
            let file: FileConfig = toml::from_str(bad).expect("parses");
            assert!(
                Settings::from_file(file, &Overrides::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_relative_policy_in_the_file_is_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("conf").join("billstack.toml");
        std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
        std::fs::write(&config, "policy = \"policies/mine.wasm\"\n").expect("write");
        let s = Settings::from_file(
            FileConfig::read(&config).expect("reads"),
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            s.policy,
            Some(dir.path().join("conf").join("policies/mine.wasm"))
        );
        std::fs::write(&config, "policy = \"/abs/mine.wasm\"\n").expect("write");
        let s = Settings::from_file(
            FileConfig::read(&config).expect("reads"),
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(s.policy, Some(PathBuf::from("/abs/mine.wasm")));
        // Parsed from text with no file, a relative path stays as written.
        let file: FileConfig = toml::from_str("policy = \"mine.wasm\"\n").expect("parses");
        let s = Settings::from_file(file, &Overrides::default()).expect("valid");
        assert_eq!(s.policy, Some(PathBuf::from("mine.wasm")));
    }

    #[test]
    fn the_replica_lease_is_checked_both_ways() {
        let default =
            Settings::from_file(FileConfig::default(), &Overrides::default()).expect("valid");
        assert_eq!(default.replica_lease, Duration::from_millis(1_000));
        for (text, ms) in [("600", 600), ("60000", 60_000)] {
            let file: FileConfig =
                toml::from_str(&format!("replica_lease_ms = {text}\n")).expect("parses");
            let s = Settings::from_file(file, &Overrides::default()).expect("valid");
            assert_eq!(s.replica_lease, Duration::from_millis(ms));
        }
        for bad in ["599", "60001", "0"] {
            let file: FileConfig =
                toml::from_str(&format!("replica_lease_ms = {bad}\n")).expect("parses");
            let error = Settings::from_file(file, &Overrides::default())
                .expect_err(bad)
                .to_string();
            assert!(error.contains("replica_lease_ms"), "{error}");
        }
    }

    #[test]
    fn tls_needs_both_files_and_makes_cookies_secure() {
        let both: FileConfig =
            toml::from_str("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").expect("parses");
        let s = Settings::from_file(both, &Overrides::default()).expect("valid");
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert!(s.cookie_secure);
        let plain = Settings::from_file(FileConfig::default(), &Overrides::default()).expect("ok");
        assert_eq!((plain.tls, plain.cookie_secure), (None, false));
        for bad in [
            "[tls]\ncert = \"c.pem\"\n",
            "[tls]\nkey = \"k.pem\"\n",
            "cookie_secure = false\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        ] {
            let file: FileConfig = toml::from_str(bad).expect("parses");
            assert!(
                Settings::from_file(file, &Overrides::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let file: FileConfig = toml::from_str(
            "trusted_proxies = [\"127.0.0.1\", \"::1\", \"10.0.0.0/8\", \"fd00::/8\"]\n",
        )
        .expect("parses");
        let s = Settings::from_file(file, &Overrides::default()).expect("valid");
        assert_eq!(s.trusted_proxies.len(), 4);
        let inside: IpAddr = "10.200.3.4".parse().expect("ip");
        assert!(s.trusted_proxies.iter().any(|n| n.contains(&inside)));
        let outside: IpAddr = "11.0.0.1".parse().expect("ip");
        assert!(!s.trusted_proxies.iter().any(|n| n.contains(&outside)));
        for bad in ["10.0.0.0/33", "10.0.0.1/8", "proxy.internal", "10.0.0.0/"] {
            let file: FileConfig =
                toml::from_str(&format!("trusted_proxies = [\"{bad}\"]\n")).expect("parses");
            let err = Settings::from_file(file, &Overrides::default()).expect_err(bad);
            assert!(format!("{err:#}").contains(bad), "{err:#}");
        }
    }
}
