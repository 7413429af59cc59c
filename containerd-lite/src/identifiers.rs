//! Names that clients choose and that become keys and paths: namespaces,
//! event topic components, lease ids. The rule is containerd's, so a name
//! one accepts the other does too: ASCII letters and digits, in runs joined
//! by single `.`, `_` or `-`, at most 76 bytes.

use std::sync::LazyLock;

use regex::Regex;

use crate::{Error, Result};

/// The longest name accepted, in bytes.
pub const MAX_LENGTH: usize = 76;

static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$").expect("the identifier pattern compiles")
});

/// Checks `name` against the rule above; `what` names the kind of thing
/// in the error (e.g. "namespace").
pub fn validate(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name is empty")));
    }
    if name.len() > MAX_LENGTH {
        return Err(Error::invalid(format!(
            "{what} name {name:?} is longer than {MAX_LENGTH} bytes"
        )));
    }
    if !IDENTIFIER.is_match(name) {
        return Err(Error::invalid(format!(
            "{what} name {name:?} must be letters and digits joined by single '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// Checks a namespace name.
pub fn validate_namespace(name: &str) -> Result<()> {
    validate("namespace", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_style_names() {
        for name in ["default", "k8s.io", "moby", "a-b_c.d", "A1", &"x".repeat(MAX_LENGTH)] {
            validate_namespace(name).unwrap();
        }
    }

    #[test]
    fn refuses_paths_separators_and_overlong_names() {
        for name in [
            "", ".", "..", "../etc", "a/b", "-a", "a-", "a..b", "a b", "é",
            &"x".repeat(MAX_LENGTH + 1),
        ] {
            let err = validate_namespace(name).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument, "{name:?}");
            assert!(err.message.starts_with("namespace name"), "{}", err.message);
        }
    }
}
