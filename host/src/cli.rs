//! The `billstack` command line: clap derive, one struct per subcommand, each with `run`.
//! Commands print JSON on stdout, diagnostics on stderr, and exit non-zero on failure.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use billstack_keystore::{NewApiKey, NewUser, Role, Store, clock};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::{Overrides, Settings};
use crate::policy::{PolicyEngine, PolicyLimits, ScopePolicy};
use crate::runtime::{self, read_plugin_arg};
use crate::views::{CreatedKey, KeyView};

/// Who the offline commands act as, in the audit log.
const CLI_ACTOR: &str = "cli";

/// BillStack Keys: issue, store and check BillStack API keys.
#[derive(Debug, Parser)]
#[command(name = "billstack", version, about, propagate_version = true)]
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
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
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::open(&settings.data_dir)?)
}

impl TeamCommand {
    fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let TeamCommand::Create { name, id } = self;
        let team = open_store(settings)?.create_team(id.as_deref(), &name, CLI_ACTOR.into())?;
        print_json(&json!({"id": team.id, "name": team.name}))
    }
}

impl ProjectCommand {
    fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let ProjectCommand::Create { team, name, id } = self;
        let p =
            open_store(settings)?.create_project(&team, id.as_deref(), &name, CLI_ACTOR.into())?;
        print_json(&json!({"id": p.id, "name": p.name, "teamId": p.team_id}))
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!(
            "no password on stdin (pipe it in: echo \"$PASSWORD\" | billstack user create … --password-stdin)"
        );
    }
    Ok(password.to_string())
}

impl UserCommand {
    fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let UserCommand::Create {
            email,
            team,
            role,
            password_stdin: _,
        } = self;
        let role: Role = role.parse().map_err(anyhow::Error::msg)?;
        let password = read_password_line()?;
        let store = open_store(settings)?;
        let user = store.create_user(
            &NewUser {
                email,
                password,
                team_id: team,
                role,
            },
            CLI_ACTOR.into(),
        )?;
        print_json(&json!({"id": user.id, "email": user.email}))
    }
}

impl KeyCommand {
    fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let store = open_store(settings)?;
        match self {
            KeyCommand::Create {
                team,
                name,
                project,
                scopes,
                expires_at,
            } => {
                let expires_at = expires_at
                    .map(|t| {
                        clock::parse_rfc3339(&t)
                            .with_context(|| format!("--expires-at {t:?} is not an RFC 3339 time (e.g. 2027-01-31T00:00:00Z)"))
                    })
                    .transpose()?;
                if store.get_team(&team)?.is_none() {
                    bail!("team {team} not found");
                }
                if !scopes.is_empty() {
                    let engine = runtime::engine_for(settings)?;
                    let policies = runtime::load_policies(&engine, settings, &store)?;
                    let (policy, _) = policies.for_team(&team);
                    let known = policy.scope_names();
                    if let Some(unknown) = scopes.iter().find(|s| !known.contains(s)) {
                        bail!(
                            "scope {unknown:?} is not defined by the team's policy (known: {})",
                            known.join(", ")
                        );
                    }
                }
                let (record, raw_key) = store.create_key(&NewApiKey {
                    team_id: team,
                    project_id: project,
                    name,
                    scopes,
                    expires_at,
                    actor: CLI_ACTOR.into(),
                    source: None,
                    rate_limit: None,
                })?;
                print_json(&CreatedKey {
                    key: KeyView::created(&record),
                    raw_key,
                })
            }
            KeyCommand::List { team } => {
                if store.get_team(&team)?.is_none() {
                    bail!("team {team} not found");
                }
                let keys: Vec<KeyView> = store
                    .list_keys(&team)?
                    .iter()
                    .map(KeyView::listed)
                    .collect();
                print_json(&json!({"keys": keys}))
            }
            KeyCommand::Revoke { team, key_id } => {
                let record = store.revoke_key(&team, &key_id, CLI_ACTOR.into())?;
                print_json(&json!({
                    "id": record.id,
                    "revokedAt": record.revoked_at.map(clock::format_rfc3339),
                }))
            }
        }
    }
}

fn offline_engine(overrides: &Overrides) -> anyhow::Result<Arc<PolicyEngine>> {
    // Policy commands need no store; they use the configured limits when a config is present,
    // and keep compiled code in memory only.
    let limits = Settings::resolve(overrides)
        .map(|s| s.limits)
        .unwrap_or_else(|_| PolicyLimits::default());
    PolicyEngine::new(limits, None)
}

impl PolicyCommand {
    fn run(self, overrides: &Overrides) -> anyhow::Result<()> {
        match self {
            PolicyCommand::Check { plugin } => {
                let bytes = read_plugin_arg(&plugin)?;
                let loaded = offline_engine(overrides)?
                    .load(&bytes)
                    .with_context(|| format!("{plugin} is not a usable policy"))?;
                print_json(&json!({
                    "name": loaded.info().name,
                    "version": loaded.info().version,
                    "sha256": loaded.sha256_hex(),
                    "size": loaded.size(),
                    "memoryAtStart": loaded.memory_at_start(),
                    "scopes": loaded.info().scopes,
                }))
            }
            PolicyCommand::Test { plugin, cases } => {
                let bytes = read_plugin_arg(&plugin)?;
                // Every file is read and parsed before the (possibly slow) compilation, so a
                // typo in the last one is reported at once.
                let mut all = Vec::new();
                for path in &cases {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let file = crate::policytest::parse_cases(&text)
                        .with_context(|| format!("invalid cases file {}", path.display()))?;
                    all.extend(file.cases);
                }
                let loaded = offline_engine(overrides)?
                    .load(&bytes)
                    .with_context(|| format!("{plugin} is not a usable policy"))?;
                let (mut passed, mut failed) = (0usize, 0usize);
                let mut out = std::io::stdout().lock();
                for case in &all {
                    let result = crate::policytest::run_case(&*loaded, case);
                    match result.failure {
                        None => {
                            passed += 1;
                            writeln!(out, "PASS  {}", result.name)?;
                        }
                        Some(why) => {
                            failed += 1;
                            writeln!(out, "FAIL  {}: {why}", result.name)?;
                        }
                    }
                }
                writeln!(out, "{passed} passed, {failed} failed")?;
                if failed > 0 {
                    bail!("{failed} of {} policy cases failed", passed + failed);
                }
                Ok(())
            }
            PolicyCommand::Export { plugin, output } => {
                if plugin != runtime::DEFAULT_PLUGIN_NAME {
                    bail!(
                        "only the embedded plugin can be exported: billstack policy export default --output FILE"
                    );
                }
                let bytes = read_plugin_arg(&plugin)?;
                std::fs::write(&output, &bytes)
                    .with_context(|| format!("cannot write {}", output.display()))?;
                print_json(&json!({"output": output, "size": bytes.len()}))
            }
        }
    }
}
