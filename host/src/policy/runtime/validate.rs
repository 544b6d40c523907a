//! What a plugin may answer: its `info()` and each decision, checked before the host believes them.

use super::*;

pub(super) const MAX_NAME: usize = 64;
pub(super) const MAX_VERSION: usize = 32;
pub(super) const MAX_SCOPES: usize = 256;
pub(super) const MAX_DESCRIPTION: usize = 256;
pub(super) const MAX_CODE: usize = 64;
pub(super) const MAX_MESSAGE: usize = 1024;

pub(super) fn validate_info(raw: bindings::PluginInfo) -> Result<PolicyInfo, String> {
    if raw.name.is_empty() || raw.name.len() > MAX_NAME || raw.name.chars().any(char::is_control) {
        return Err(format!("name must be 1-{MAX_NAME} bytes of printable text"));
    }
    if raw.version.is_empty()
        || raw.version.len() > MAX_VERSION
        || raw.version.chars().any(char::is_control)
    {
        return Err(format!(
            "version must be 1-{MAX_VERSION} bytes of printable text"
        ));
    }
    if raw.scopes.len() > MAX_SCOPES {
        return Err(format!(
            "{} scopes; at most {MAX_SCOPES} are allowed",
            raw.scopes.len()
        ));
    }
    let mut scopes: Vec<ScopeDescription> = Vec::with_capacity(raw.scopes.len());
    for s in raw.scopes {
        if !billstack_keystore::is_valid_scope_name(&s.name) {
            let shown: String = s.name.chars().take(80).collect();
            return Err(format!("{shown:?} is not a valid scope name"));
        }
        if scopes.iter().any(|seen| seen.name == s.name) {
            return Err(format!("scope {} is listed twice", s.name));
        }
        if s.description.len() > MAX_DESCRIPTION || s.description.chars().any(char::is_control) {
            return Err(format!(
                "the description of {} must be at most {MAX_DESCRIPTION} bytes of printable text",
                s.name
            ));
        }
        scopes.push(ScopeDescription {
            name: s.name,
            description: s.description,
        });
    }
    Ok(PolicyInfo {
        name: raw.name,
        version: raw.version,
        scopes,
    })
}

pub(super) fn validate_decision(raw: bindings::Decision) -> Result<PolicyDecision, PluginError> {
    let denial = match raw {
        bindings::Decision::Allow => return Ok(PolicyDecision::Allow),
        bindings::Decision::Deny(d) => d,
    };
    let bad = |why: String| Err(PluginError::InvalidAnswer(why));
    if denial.status != 403 && denial.status != 404 {
        return bad(format!(
            "deny status {} (only 403 and 404 are allowed)",
            denial.status
        ));
    }
    if denial.code.is_empty()
        || denial.code.len() > MAX_CODE
        || !denial
            .code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad(format!(
            "deny code must be 1-{MAX_CODE} bytes of snake_case"
        ));
    }
    if denial.message.len() > MAX_MESSAGE {
        return bad(format!(
            "deny message of {} bytes (at most {MAX_MESSAGE})",
            denial.message.len()
        ));
    }
    if let Some(scope) = &denial.required_scope
        && !billstack_keystore::is_valid_scope_name(scope)
    {
        return bad("required scope is not a valid scope name".to_string());
    }
    Ok(PolicyDecision::Deny {
        status: denial.status,
        code: denial.code,
        message: denial.message.chars().filter(|c| !c.is_control()).collect(),
        required_scope: denial.required_scope,
    })
}
