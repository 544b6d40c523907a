//! The `billstack` command line: clap derive, one struct per subcommand, each with `run`.
//! Commands print JSON on stdout, diagnostics on stderr, and exit non-zero on failure.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use billstack_keystore::{RateLimit, Role, Storage, Store, clock};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::app::operator::OperatorCommand;
use crate::config::{Overrides, Settings};
use crate::policy::{PolicyEngine, PolicyLimits, ScopePolicy};
use crate::startup::{self, read_plugin_arg};

mod admin;
mod backup;
mod keys;
mod policy;

use backup::backup;

/// The version line: the binary's version and the policy world it hosts.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (policy WIT world ",
    env!("BILLSTACK_WIT_WORLD"),
    ")"
);

/// BillStack Keys: issue, store and check BillStack API keys.
///
/// One binary: the HTTP server (dashboard, key API, and the forward-auth, reverse-proxy and
/// JSON-verify front doors) and offline commands on its data directory. Offline commands
/// refuse, and change nothing, while a server holds the directory. Commands print JSON on
/// stdout and diagnostics on stderr.
#[derive(Debug, Parser)]
#[command(
    name = "billstack",
    version = VERSION,
    about,
    long_about,
    propagate_version = true,
    after_help = "Start with `billstack serve`; see README.md for the HTTP API and billstack.toml."
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts, before or after it.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Config file [default: billstack.toml if present]
    #[arg(long, global = true, env = "BILLSTACK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, global = true, env = "BILLSTACK_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory [default: ./billstack-data]
    #[arg(long, global = true, env = "BILLSTACK_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format on stderr: text for people, json (one object per line) for collectors.
    /// BILLSTACK_LOG sets the level filter (default info).
    #[arg(
        long,
        global = true,
        env = "BILLSTACK_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Cli {
    /// The log format asked for.
    pub fn log_format(&self) -> LogFormat {
        self.global.log_format
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server until SIGINT or SIGTERM.
    ///
    /// On an empty data directory it first creates a team, a project and an owner account
    /// (BILLSTACK_ADMIN_EMAIL, default admin@localhost; BILLSTACK_ADMIN_PASSWORD, or a
    /// generated password printed once on stderr). Prints `billstack listening on URL`.
    Serve,
    /// Manage teams.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check, test and export policy plugins.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Write a consistent copy of the whole store to a file, while the server runs (through
    /// its control socket) or not.
    Backup {
        /// The backup file to create (never overwritten).
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
    /// Restore a backup into a new, empty data directory (--data-dir), or, with storage set to
    /// a PostgreSQL URL, into an empty database; the file is checked in full before anything
    /// is written, and a database restore is compared table by table afterwards.
    Restore {
        /// The backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Copy the sled store of the data directory into an empty PostgreSQL database, in one
    /// transaction, then compare every table's count and checksum; the sled store is left as
    /// it was (it may be in use by a running server).
    Migrate {
        /// The target database, `postgres://user:password@host:port/database`.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (as `GET /api/openapi.json` serves it),
    /// for client generators and validators.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum TeamCommand {
    /// Create a team.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Id to use instead of a random `team_…`.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// Create a project in a team.
    Create {
        /// The team.
        #[arg(long)]
        team: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Id to use instead of a random `proj_…`.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a dashboard user in a team; the password is read from the first line of stdin.
    Create {
        /// Email address.
        #[arg(long)]
        email: String,
        /// The team the user joins.
        #[arg(long)]
        team: String,
        /// Role in the team.
        #[arg(long, default_value = "member", value_parser = ["owner", "member"])]
        role: String,
        /// Read the password from stdin (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Make the user a deployment administrator (may create teams).
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an API key; prints the raw key once.
    Create {
        /// The owning team.
        #[arg(long)]
        team: String,
        /// A label.
        #[arg(long)]
        name: String,
        /// Limit the key to one project.
        #[arg(long)]
        project: Option<String>,
        /// A scope (repeatable); none means full access.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Expiry, RFC 3339 (e.g. 2027-01-31T00:00:00Z).
        #[arg(long, value_name = "T")]
        expires_at: Option<String>,
        /// A request budget, LIMIT/SECONDS (e.g. 1000/60); over it, requests get 429.
        #[arg(long, value_name = "LIMIT/SECONDS", value_parser = parse_rate_limit)]
        rate_limit: Option<RateLimit>,
    },
    /// Rotate a key: a new key (printed once) with the same name, project, scopes, expiry and
    /// budget; the old one keeps working for the grace period.
    Rotate {
        /// The team.
        #[arg(long)]
        team: String,
        /// The key id (`key_…`).
        key_id: String,
        /// How long the old key keeps working, in seconds (0 = stops at once; at most 30 days).
        #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
        grace_period_seconds: u64,
    },
    /// List a team's active keys.
    List {
        /// The team.
        #[arg(long)]
        team: String,
    },
    /// Revoke a key, at once and for good.
    Revoke {
        /// The team.
        #[arg(long)]
        team: String,
        /// The key id (`key_…`).
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a plugin (`default` = the embedded one) and print its scope catalogue.
    Check {
        /// PLUGIN.wasm or `default`.
        plugin: String,
    },
    /// Run cases files against a plugin; ends with `N passed, N failed`.
    Test {
        /// PLUGIN.wasm or `default`.
        plugin: String,
        /// The cases (TOML), one file or more; the plugin is compiled once for all of them.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
    /// Decide the same requests with two plugins and print every one they decide differently;
    /// ends with `N same, N different`. Without cases files, the default table's routes are
    /// probed with a full-access key, a key with the route's scope, and one with every other.
    Diff {
        /// The policy in force: OLD.wasm or `default`.
        old: String,
        /// The candidate: NEW.wasm or `default`.
        new: String,
        /// Cases files (TOML, as for `policy test`; `expect` is not used here).
        cases: Vec<PathBuf>,
    },
    /// Write a plugin (only `default`) to a file, as a starting point.
    Export {
        /// `default`.
        plugin: String,
        /// Where to write it.
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// Parses the command line and runs it.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = Overrides {
        config: cli.global.config,
        listen: cli.global.listen,
        data_dir: cli.global.data_dir,
    };
    match cli.command {
        Command::Serve => {
            let settings = Settings::resolve(&overrides)?;
            crate::server::serve_blocking(settings)
        }
        Command::Team(c) => c.run(&Settings::resolve(&overrides)?),
        Command::Project(c) => c.run(&Settings::resolve(&overrides)?),
        Command::User(c) => c.run(&Settings::resolve(&overrides)?),
        Command::Key(c) => c.run(&Settings::resolve(&overrides)?),
        Command::Policy(c) => c.run(&overrides),
        Command::Backup { output } => backup(&Settings::resolve(&overrides)?, &output),
        Command::Openapi => print_json(crate::server::openapi::document()),
        Command::Migrate { to } => migrate(&Settings::resolve(&overrides)?, &to),
        Command::Restore { file } => {
            let settings = Settings::resolve(&overrides)?;
            if let crate::config::StorageChoice::Postgres(url) = &settings.storage {
                let store = billstack_keystore::pg::PgStore::connect(
                    url,
                    &billstack_keystore::pg::PgOptions {
                        ca_file: settings.storage_ca.clone(),
                        replica: None,
                        ..billstack_keystore::pg::PgOptions::default()
                    },
                )?;
                let (summary, tables) = store
                    .restore_from(|| std::fs::File::open(&file).map(std::io::BufReader::new))
                    .with_context(|| format!("cannot restore {}", file.display()))?;
                return report_tables(json!({"restored": summary}), tables);
            }
            let summary = Store::restore_from(&settings.data_dir, || {
                std::fs::File::open(&file).map(std::io::BufReader::new)
            })
            .with_context(|| {
                format!(
                    "cannot restore {} into {}",
                    file.display(),
                    settings.data_dir.display()
                )
            })?;
            print_json(&json!({"dataDir": settings.data_dir, "restored": summary}))
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let shape = || format!("{text:?} is not LIMIT/SECONDS, e.g. 1000/60");
    let (limit, window) = text.split_once('/').ok_or_else(shape)?;
    let limit = RateLimit {
        limit: limit.trim().parse().map_err(|_| shape())?,
        window_seconds: window.trim().parse().map_err(|_| shape())?,
    };
    limit.validate().map_err(|e| e.to_string())?;
    Ok(limit)
}

/// What a command needs of its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreUse {
    /// It may start a store, in a directory that exists (empty, as a script makes it).
    MayStart,
    /// It needs a store that is already there.
    Existing,
}

/// Checks the data directory the way `use` needs it, before anything is opened: only `serve`
/// creates a directory, so a mistyped `--data-dir` is an error naming the path, never a new
/// empty store.
fn check_data_dir(settings: &Settings, wanted: StoreUse) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "the data directory {} does not exist (only `billstack serve` creates one; check --data-dir or BILLSTACK_DATA_DIR)",
            dir.display()
        ),
        Err(e) => bail!("cannot use the data directory {}: {e}", dir.display()),
        Ok(meta) if !meta.is_dir() => {
            bail!("the data directory {} is not a directory", dir.display())
        }
        Ok(_) => {}
    }
    if wanted == StoreUse::Existing && !Store::exists_in(dir) {
        bail!(
            "{} holds no BillStack store (check --data-dir; `billstack serve` or `billstack team create` starts one)",
            dir.display()
        );
    }
    Ok(())
}

fn open_store(settings: &Settings, wanted: StoreUse) -> anyhow::Result<Store> {
    check_data_dir(settings, wanted)?;
    Ok(Store::open(&settings.data_dir)?)
}

/// Runs an operator command and prints its answer: in this process when no server holds the
/// data directory, otherwise in that server, through its control socket (so nothing needs the
/// server stopped). A store held by a process with no control socket is refused plainly.
fn operate(settings: &Settings, command: OperatorCommand) -> anyhow::Result<()> {
    if let crate::config::StorageChoice::Postgres(_) = &settings.storage {
        // Any number of processes may write to PostgreSQL, but a running server keeps keys in
        // memory: a change it does not make itself would reach it late. So a server that
        // answers on this data directory's control socket makes the change.
        if crate::server::control::answers(&settings.data_dir) {
            return print_json(&crate::server::control::send_command(
                &settings.data_dir,
                &command,
            )?);
        }
        let store = startup::open_storage(settings)?;
        let team = command.policy_team().map(str::to_owned);
        let app = startup::operator_app(settings, store, team.as_deref())?;
        return print_json(&command.execute(&app)?);
    }
    let wanted = if command.may_start_a_store() {
        StoreUse::MayStart
    } else {
        StoreUse::Existing
    };
    let store = match open_store(settings, wanted) {
        Ok(store) => store,
        Err(e) => {
            let locked = matches!(
                e.downcast_ref::<billstack_keystore::Error>(),
                Some(billstack_keystore::Error::Locked(_))
            );
            if locked && crate::server::control::answers(&settings.data_dir) {
                return print_json(&crate::server::control::send_command(
                    &settings.data_dir,
                    &command,
                )?);
            }
            return Err(e);
        }
    };
    let team = command.policy_team().map(str::to_owned);
    let app = startup::operator_app(settings, Arc::new(store), team.as_deref())?;
    print_json(&command.execute(&app)?)
}

/// Prints a copy's summary with its per-table checks; an error if any table differs.
fn report_tables(
    mut out: serde_json::Value,
    tables: Vec<billstack_keystore::pg::TableCheck>,
) -> anyhow::Result<()> {
    let differing: Vec<String> = tables
        .iter()
        .filter(|t| !t.matches())
        .map(|t| format!("{} ({} of {} records)", t.table, t.found, t.expected))
        .collect();
    out["tables"] = json!(tables);
    out["checksumsMatch"] = json!(differing.is_empty());
    print_json(&out)?;
    if !differing.is_empty() {
        bail!(
            "the copy differs from its source in: {}",
            differing.join(", ")
        );
    }
    Ok(())
}

/// `billstack migrate --to postgres://…`: the data directory's sled store, copied through the
/// backup format (from a running server's control socket when one holds the store), into an
/// empty database.
fn migrate(settings: &Settings, to: &str) -> anyhow::Result<()> {
    let crate::config::StorageChoice::Postgres(url) =
        crate::config::StorageChoice::parse(Some(to))?
    else {
        bail!("--to must be a postgres:// URL");
    };
    check_data_dir(settings, StoreUse::Existing)?;
    let mut backup = Vec::new();
    match Store::open(&settings.data_dir) {
        Ok(store) => {
            store.backup_to(&mut backup)?;
        }
        Err(billstack_keystore::Error::Locked(_)) => {
            crate::server::control::fetch_backup(&settings.data_dir, &mut backup)?;
        }
        Err(e) => return Err(e.into()),
    }
    let target = billstack_keystore::pg::PgStore::connect(
        &url,
        &billstack_keystore::pg::PgOptions {
            ca_file: settings.storage_ca.clone(),
            replica: None,
            ..billstack_keystore::pg::PgOptions::default()
        },
    )
    .with_context(|| format!("cannot use {}", billstack_keystore::pg::redact_url(&url)))?;
    let started = std::time::Instant::now();
    let (summary, tables) = target
        .restore_from(|| Ok(std::io::Cursor::new(backup.as_slice())))
        .context("cannot migrate")?;
    report_tables(
        json!({
            "from": settings.data_dir,
            "to": billstack_keystore::pg::redact_url(&url),
            "migrated": summary,
            "seconds": started.elapsed().as_secs_f64(),
        }),
        tables,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command, subcommand and option says what it is for.
    #[test]
    fn every_command_and_option_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        let cli = Cli::command();
        cli.clone().debug_assert();
        walk(&cli, "billstack", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn rate_limits_parse_within_range_only() {
        assert_eq!(
            parse_rate_limit("1000/60"),
            Ok(RateLimit {
                limit: 1000,
                window_seconds: 60
            })
        );
        assert!(parse_rate_limit("1/86400").is_ok());
        for bad in ["0/60", "1/0", "1/86401", "1000", "/60", "a/b", "-1/60"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }
}
