//! The `env` section: which host variables pass into the sandbox, and
//! the names and patterns it may use.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Environment rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Env {
    /// Host variables that pass in: exact names or `PREFIX_*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass: Vec<EnvPattern>,
    /// Variables always set to these values (they win over passed ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<EnvName, String>,
}

impl Env {
    pub fn is_empty(&self) -> bool {
        self.pass.is_empty() && self.set.is_empty()
    }
}

fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An environment variable name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if valid_env_name(&s) {
            Ok(EnvName(s))
        } else {
            Err(format!(
                "expected a variable name of letters, digits and '_', got {s:?}"
            ))
        }
    }
}

validated_string!(EnvName, {
    "description": "An environment variable name.",
    "type": "string",
    "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"
});

/// A variable name, a `PREFIX*` pattern, or `*` (every variable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvPattern(String);

impl EnvPattern {
    /// The prefix when this is a `PREFIX*` pattern (empty for `*`).
    pub fn prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }
    pub fn matches(&self, name: &str) -> bool {
        match self.prefix() {
            Some(p) => name.starts_with(p),
            None => name == self.0,
        }
    }
}

impl TryFrom<String> for EnvPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = match s.strip_suffix('*') {
            Some("") => true,
            Some(p) => valid_env_name(p),
            None => valid_env_name(&s),
        };
        if ok {
            Ok(EnvPattern(s))
        } else {
            Err(format!(
                "expected a variable name or a PREFIX_* pattern, got {s:?}"
            ))
        }
    }
}

validated_string!(EnvPattern, {
    "description": "A variable name, a PREFIX_* pattern, or * for every variable.",
    "type": "string",
    "pattern": "^([A-Za-z_][A-Za-z0-9_]*\\*?|\\*)$"
});
