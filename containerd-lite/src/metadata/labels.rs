//! Labels and identifiers: the checks every record shares.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::{Error, Result};

/// Key/value labels on namespaces, images, content and leases.
pub type Labels = BTreeMap<String, String>;

/// The most bytes one label (key plus value) may take, as in containerd.
pub const MAX_LABEL_SIZE: usize = 4096;

/// The longest identifier (namespace name, lease id).
pub const MAX_IDENTIFIER_LEN: usize = 76;

/// Rejects empty keys and labels over [`MAX_LABEL_SIZE`] with
/// `InvalidArgument`.
pub fn validate(labels: &Labels) -> Result<()> {
    for (key, value) in labels {
        validate_one(key, value)?;
    }
    Ok(())
}

/// The check of [`validate`] for one label.
pub fn validate_one(key: &str, value: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("label key must not be empty"));
    }
    let size = key.len() + value.len();
    if size > MAX_LABEL_SIZE {
        return Err(Error::invalid(format!(
            "label {key:?}: key and value take {size} bytes, more than {MAX_LABEL_SIZE}"
        )));
    }
    Ok(())
}

/// Validates an identifier (namespace name, lease id): alphanumeric runs
/// joined by single `.`, `_` or `-`, at most [`MAX_IDENTIFIER_LEN`] bytes.
/// `what` names the identifier in the `InvalidArgument` error.
pub fn validate_identifier(what: &str, id: &str) -> Result<()> {
    static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$").expect("identifier pattern is valid")
    });
    if id.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if id.len() > MAX_IDENTIFIER_LEN {
        return Err(Error::invalid(format!(
            "{what} {id:?}: longer than {MAX_IDENTIFIER_LEN} bytes"
        )));
    }
    if !IDENTIFIER.is_match(id) {
        return Err(Error::invalid(format!(
            "{what} {id:?}: must be letters and digits joined by single '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// Applies a field-mask update of labels: `labels` replaces them all,
/// `labels.<key>` sets (or with an empty or absent value, removes) one.
/// Returns `false` for a path that is not about labels.
pub(crate) fn apply_label_path(current: &mut Labels, wanted: &Labels, path: &str) -> bool {
    if path == "labels" {
        *current = wanted.clone();
        return true;
    }
    let Some(key) = path.strip_prefix("labels.") else {
        return false;
    };
    match wanted.get(key) {
        Some(value) if !value.is_empty() => {
            current.insert(key.to_owned(), value.clone());
        }
        _ => {
            current.remove(key);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn identifiers_follow_containerd_rules() {
        for ok in ["default", "k8s.io", "a-b_c.d", "A1"] {
            validate_identifier("namespace", ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a/b",
            "../x",
            "a b",
            &"x".repeat(77),
        ] {
            let err = validate_identifier("namespace", bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn oversized_or_keyless_labels_are_refused() {
        validate_one("k", &"v".repeat(MAX_LABEL_SIZE - 1)).unwrap();
        let err = validate_one("k", &"v".repeat(MAX_LABEL_SIZE)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            validate_one("", "v").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn label_paths_replace_set_and_remove() {
        let mut current: Labels = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let wanted: Labels = [("a".into(), "9".into()), ("c".into(), "3".into())].into();
        assert!(apply_label_path(&mut current, &wanted, "labels.a"));
        assert!(apply_label_path(&mut current, &wanted, "labels.b"));
        assert_eq!(current, [("a".into(), "9".into())].into());
        assert!(apply_label_path(&mut current, &wanted, "labels"));
        assert_eq!(current, wanted);
        assert!(!apply_label_path(&mut current, &wanted, "target"));
    }
}
