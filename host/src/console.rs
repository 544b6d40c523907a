//! Lines for the operator on stderr that are printed whatever the log filter says: the address
//! the server listens on (scripts and tests wait for it), the bootstrap account, policy
//! reloads, the end of a run, and a command's final error.
//!
//! With `--log-format json` each is one JSON object shaped like the tracing subscriber's own
//! lines (`timestamp`, `level`, `fields.message`, `target`), so a collector reads a stream in
//! which every line is JSON; otherwise each is the plain sentence.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use billstack_keystore::clock;
use serde_json::{Map, Value, json};

static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses JSON (`true`) or plain lines for the rest of the process.
pub fn use_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// How much a line matters, as in the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal operation.
    Info,
    /// Something the operator should look at.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Prints `message` (plus `fields` in JSON) as one line on stderr.
pub fn say(level: Level, message: &str, fields: &[(&str, &str)]) {
    let line = render(JSON.load(Ordering::Relaxed), level, message, fields);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

fn render(json: bool, level: Level, message: &str, fields: &[(&str, &str)]) -> String {
    if !json {
        return message.to_string();
    }
    let mut all = Map::new();
    all.insert("message".into(), Value::from(message));
    for (name, value) in fields {
        all.insert((*name).into(), Value::from(*value));
    }
    json!({
        "timestamp": clock::format_rfc3339(clock::now_ms()),
        "level": level.as_str(),
        "fields": all,
        "target": "billstack",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_the_sentence_and_json_lines_one_object() {
        assert_eq!(
            render(
                false,
                Level::Info,
                "billstack listening on http://x",
                &[("url", "http://x")]
            ),
            "billstack listening on http://x"
        );
        let line = render(
            true,
            Level::Warn,
            "a \"quoted\"\nmessage",
            &[("url", "http://x")],
        );
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["fields"]["message"], "a \"quoted\"\nmessage");
        assert_eq!(v["fields"]["url"], "http://x");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
