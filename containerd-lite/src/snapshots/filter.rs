//! Filters in containerd's syntax, as `ctr snapshots ls` and the Walk API
//! send them.
//!
//! A filter is selectors joined by `,`, all of which must match; a list of
//! filters matches when any one does; no filters match everything. A
//! selector is a field path, optionally followed by an operator and value:
//!
//! ```text
//! kind==committed,labels."containerd.io/snapshot.ref"
//! parent!=base,name~=^sha256:
//! ```
//! `==` equal, `!=` not equal, `~=` regular expression; a path alone asks
//! that the field be present. Path parts are separated by `.`; a part or a
//! value with other characters is double-quoted (`\"` and `\\` escape).
//!
//! Nothing here knows about snapshots: any record that can answer
//! [`Fields::field`] can be filtered.

use regex::Regex;

use crate::error::{Error, Result};

/// A record that can be filtered: the value of a field path, if present.
pub trait Fields {
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Operator {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    operator: Operator,
}

impl Selector {
    fn matches(&self, record: &dyn Fields) -> bool {
        let value = record.field(&self.path);
        match &self.operator {
            Operator::Present => value.is_some(),
            Operator::Equal(want) => value.as_deref() == Some(want.as_str()),
            Operator::NotEqual(want) => value.as_deref() != Some(want.as_str()),
            Operator::Matches(re) => value.is_some_and(|v| re.is_match(&v)),
        }
    }
}

/// Parsed filters: any of the alternatives, each a conjunction.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    alternatives: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses filter strings; an empty list (or only empty strings) matches
    /// everything.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Self> {
        let alternatives = filters
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| !f.trim().is_empty())
            .map(|f| Parser::new(f).conjunction())
            .collect::<Result<_>>()?;
        Ok(Filter { alternatives })
    }

    /// Whether `record` passes.
    pub fn matches(&self, record: &dyn Fields) -> bool {
        self.alternatives.is_empty()
            || self
                .alternatives
                .iter()
                .any(|all| all.iter().all(|s| s.matches(record)))
    }
}

struct Parser<'a> {
    input: &'a str,
    rest: &'a str,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser { input, rest: input }
    }

    fn error(&self, what: &str) -> Error {
        let at = self.input.len() - self.rest.len();
        Error::invalid(format!("filter {:?}: {what} at offset {at}", self.input))
    }

    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn conjunction(&mut self) -> Result<Vec<Selector>> {
        let mut selectors = vec![self.selector()?];
        loop {
            self.skip_spaces();
            if self.rest.is_empty() {
                return Ok(selectors);
            }
            let Some(rest) = self.rest.strip_prefix(',') else {
                return Err(self.error("expected ','"));
            };
            self.rest = rest;
            selectors.push(self.selector()?);
        }
    }

    fn selector(&mut self) -> Result<Selector> {
        let mut path = vec![self.field()?];
        while let Some(rest) = self.rest.strip_prefix('.') {
            self.rest = rest;
            path.push(self.field()?);
        }
        self.skip_spaces();
        let operator = if let Some(rest) = self.rest.strip_prefix("==") {
            self.rest = rest;
            Operator::Equal(self.value()?)
        } else if let Some(rest) = self.rest.strip_prefix("!=") {
            self.rest = rest;
            Operator::NotEqual(self.value()?)
        } else if let Some(rest) = self.rest.strip_prefix("~=") {
            self.rest = rest;
            let pattern = self.value()?;
            let re = Regex::new(&pattern)
                .map_err(|e| self.error(&format!("bad regular expression: {e}")))?;
            Operator::Matches(re)
        } else {
            Operator::Present
        };
        Ok(Selector { path, operator })
    }

    fn field(&mut self) -> Result<String> {
        self.skip_spaces();
        if self.rest.starts_with('"') {
            return self.quoted();
        }
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return Err(self.error("expected a field name"));
        }
        let (field, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(field.to_string())
    }

    fn value(&mut self) -> Result<String> {
        self.skip_spaces();
        if self.rest.starts_with('"') {
            return self.quoted();
        }
        let end = self.rest.find(',').unwrap_or(self.rest.len());
        let (value, rest) = self.rest.split_at(end);
        self.rest = rest;
        let value = value.trim_end();
        if value.is_empty() {
            return Err(self.error("expected a value"));
        }
        Ok(value.to_string())
    }

    fn quoted(&mut self) -> Result<String> {
        let mut out = String::new();
        let mut chars = self.rest.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.error("unterminated quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Rec(BTreeMap<&'static str, &'static str>);

    impl Fields for Rec {
        fn field(&self, path: &[String]) -> Option<String> {
            self.0.get(path.join(".").as_str()).map(|v| v.to_string())
        }
    }

    fn rec() -> Rec {
        Rec(BTreeMap::from([
            ("name", "sha256:abc"),
            ("kind", "committed"),
            ("labels.containerd.io/snapshot.ref", "x"),
        ]))
    }

    #[test]
    fn operators_and_quoting() {
        let r = rec();
        let ok = |f: &str| Filter::parse(&[f]).unwrap().matches(&r);
        assert!(ok("kind==committed"));
        assert!(!ok("kind==active"));
        assert!(ok("kind!=active"));
        assert!(ok("name~=^sha256:"));
        assert!(ok(r#"labels."containerd.io/snapshot.ref""#));
        assert!(ok(r#"labels."containerd.io/snapshot.ref"==x"#));
        assert!(!ok("labels.missing"));
        assert!(ok("kind==committed, name==\"sha256:abc\""));
        assert!(!ok("kind==committed,name==other"));
    }

    #[test]
    fn alternatives_or_and_empty_matches_all() {
        let r = rec();
        assert!(Filter::parse(&["kind==active", "kind==committed"])
            .unwrap()
            .matches(&r));
        assert!(Filter::parse::<&str>(&[]).unwrap().matches(&r));
        assert!(Filter::parse(&[""]).unwrap().matches(&r));
    }

    #[test]
    fn malformed_filters_are_invalid_arguments() {
        for bad in [
            "kind==",
            "\"open",
            "kind==a;b==c d,",
            "name~=(",
            ".x",
            "a b",
        ] {
            let err = Filter::parse(&[bad]).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument, "{bad}: {err}");
        }
    }
}
