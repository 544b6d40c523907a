//! `policy` commands: check, test and export plugins, with no store.

use super::*;

pub(super) fn offline_engine(overrides: &Overrides) -> anyhow::Result<Arc<PolicyEngine>> {
    // Policy commands need no store; they use the configured limits when a config is present,
    // and keep compiled code in memory only.
    let limits = Settings::resolve(overrides)
        .map(|s| s.limits)
        .unwrap_or_else(|_| PolicyLimits::default());
    PolicyEngine::new(limits, None)
}

/// Every case of every file, in order; the first unreadable or invalid file is the error.
fn read_cases(paths: &[PathBuf]) -> anyhow::Result<Vec<crate::policytest::Case>> {
    let mut all = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file = crate::policytest::parse_cases(&text)
            .with_context(|| format!("invalid cases file {}", path.display()))?;
        all.extend(file.cases);
    }
    Ok(all)
}

impl PolicyCommand {
    pub(super) fn run(self, overrides: &Overrides) -> anyhow::Result<()> {
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
                let all = read_cases(&cases)?;
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
            PolicyCommand::Diff { old, new, cases } => {
                let mut probes = read_cases(&cases)?;
                if probes.is_empty() {
                    probes = crate::policytest::default_table_probes();
                }
                let engine = offline_engine(overrides)?;
                let load = |plugin: &str| {
                    let bytes = read_plugin_arg(plugin)?;
                    engine
                        .load(&bytes)
                        .with_context(|| format!("{plugin} is not a usable policy"))
                };
                let (before, after) = (load(&old)?, load(&new)?);
                let (mut same, mut different) = (0usize, 0usize);
                let mut out = std::io::stdout().lock();
                for probe in &probes {
                    let was = crate::policytest::decide_case(&*before, probe);
                    let now = crate::policytest::decide_case(&*after, probe);
                    if crate::policytest::outcome(&was) == crate::policytest::outcome(&now) {
                        same += 1;
                        continue;
                    }
                    different += 1;
                    let mut name = crate::policytest::case_name(probe);
                    if probe.name.is_none() {
                        name.push_str(&if probe.scopes.is_empty() {
                            ", full-access key".to_string()
                        } else {
                            format!(", key with {}", probe.scopes.join(" "))
                        });
                    }
                    writeln!(
                        out,
                        "{name}: {} -> {}",
                        crate::policytest::describe(&was),
                        crate::policytest::describe(&now)
                    )?;
                }
                writeln!(out, "{same} same, {different} different")?;
                Ok(())
            }
            PolicyCommand::Export { plugin, output } => {
                if plugin != startup::DEFAULT_PLUGIN_NAME {
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
