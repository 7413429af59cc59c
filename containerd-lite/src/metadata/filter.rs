//! containerd's list filters, shared by every List call.
//!
//! A request carries `filters: repeated string`. An item is listed when it
//! matches any one string (OR); a string is selectors joined by `,`, all of
//! which must match (AND). A selector is a field path, optionally followed
//! by an operator and a value:
//!
//! ```text
//! name==docker.io/library/busybox:latest
//! labels."containerd.io/gc.root"           (present, whatever the value)
//! labels.env!=prod,name~=^docker\.io/
//! ```
//!
//! Path segments are joined by `.`; a segment or value with other
//! characters is written in double quotes (`\"` and `\\` escape). `==` and
//! `!=` compare strings, `~=` matches a regular expression. A field the
//! item does not have matches no selector, not even `!=`. Each record type
//! says which fields it has by implementing [`Fields`].

use std::fmt;

use regex::Regex;

use crate::{Error, Result};

/// A record's fields as filters see them.
pub trait Fields {
    /// The value at `path` (e.g. `["labels", "k"]`), `None` if absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

/// A parsed list filter: an OR of ANDs of selectors.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Empty matches everything.
    alternatives: Vec<Vec<Selector>>,
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    test: Option<Test>,
}

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

impl Filter {
    /// The filter that lets everything through.
    pub fn everything() -> Filter {
        Filter::default()
    }

    /// Parses a request's `filters`: any of them may match. No filters, or
    /// only empty strings, match everything.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter> {
        let mut alternatives = Vec::new();
        for filter in filters {
            let text = filter.as_ref();
            if text.trim().is_empty() {
                return Ok(Filter::everything());
            }
            alternatives.push(Parser::new(text).conjunction()?);
        }
        Ok(Filter { alternatives })
    }

    /// Parses one filter string (selectors joined by `,`).
    pub fn parse(filter: &str) -> Result<Filter> {
        Filter::parse_all(&[filter])
    }

    /// Whether `item` passes the filter.
    pub fn matches(&self, item: &dyn Fields) -> bool {
        self.alternatives.is_empty()
            || self
                .alternatives
                .iter()
                .any(|all| all.iter().all(|selector| selector.matches(item)))
    }
}

impl Selector {
    fn matches(&self, item: &dyn Fields) -> bool {
        let Some(value) = item.field(&self.path) else {
            return false;
        };
        match &self.test {
            None => true,
            Some(Test::Equal(wanted)) => value == *wanted,
            Some(Test::NotEqual(unwanted)) => value != *unwanted,
            Some(Test::Matches(pattern)) => pattern.is_match(&value),
        }
    }
}

/// A recursive-descent parser over one filter string.
struct Parser<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser { text, position: 0 }
    }

    fn conjunction(&mut self) -> Result<Vec<Selector>> {
        let mut selectors = vec![self.selector()?];
        while self.eat(",") {
            selectors.push(self.selector()?);
        }
        self.skip_space();
        if self.position != self.text.len() {
            return Err(self.error("expected ',' or the end"));
        }
        Ok(selectors)
    }

    fn selector(&mut self) -> Result<Selector> {
        let mut path = vec![self.field()?];
        while self.eat(".") {
            path.push(self.field()?);
        }
        let test = if self.eat("==") {
            Some(Test::Equal(self.value()?))
        } else if self.eat("!=") {
            Some(Test::NotEqual(self.value()?))
        } else if self.eat("~=") {
            let pattern = self.value()?;
            let regex = Regex::new(&pattern)
                .map_err(|err| self.error(format!("invalid regular expression: {err}")))?;
            Some(Test::Matches(regex))
        } else {
            None
        };
        Ok(Selector { path, test })
    }

    fn field(&mut self) -> Result<String> {
        self.skip_space();
        if self.rest().starts_with('"') {
            return self.quoted();
        }
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a field name"));
        }
        Ok(self.take(len).to_owned())
    }

    fn value(&mut self) -> Result<String> {
        self.skip_space();
        if self.rest().starts_with('"') {
            return self.quoted();
        }
        let len = self.rest().find(',').unwrap_or(self.rest().len());
        let value = self.take(len).trim_end();
        if value.is_empty() {
            return Err(self.error("expected a value"));
        }
        Ok(value.to_owned())
    }

    fn quoted(&mut self) -> Result<String> {
        let start = self.position;
        self.take(1);
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.position += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.position = start;
        Err(self.error("unterminated quoted string"))
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.take(token.len());
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        let len = self.rest().len() - self.rest().trim_start().len();
        self.take(len);
    }

    fn rest(&self) -> &'a str {
        &self.text[self.position..]
    }

    fn take(&mut self, len: usize) -> &'a str {
        let taken = &self.text[self.position..self.position + len];
        self.position += len;
        taken
    }

    fn error(&self, what: impl fmt::Display) -> Error {
        Error::invalid(format!(
            "filter {:?}: {what} at byte {}",
            self.text, self.position
        ))
    }
}

/// Looks up `labels.<key>` paths, the field every record type has.
pub(crate) fn labels_field(labels: &super::Labels, path: &[String]) -> Option<String> {
    match path {
        [labels_word, key] if labels_word == "labels" => labels.get(key).cloned(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::collections::BTreeMap;

    struct Item(BTreeMap<&'static str, &'static str>);

    impl Fields for Item {
        fn field(&self, path: &[String]) -> Option<String> {
            self.0.get(path.join(".").as_str()).map(|v| v.to_string())
        }
    }

    fn busybox() -> Item {
        Item(
            [
                ("name", "docker.io/library/busybox:latest"),
                ("labels.containerd.io/gc.root", "true"),
                ("labels.env", "dev"),
            ]
            .into(),
        )
    }

    fn matches(filters: &[&str]) -> bool {
        Filter::parse_all(filters).unwrap().matches(&busybox())
    }

    #[test]
    fn equality_presence_and_quoting() {
        assert!(matches(&[]));
        assert!(matches(&["name==docker.io/library/busybox:latest"]));
        assert!(!matches(&["name==docker.io/library/alpine:latest"]));
        assert!(matches(&[r#"labels."containerd.io/gc.root""#]));
        assert!(matches(&[r#"labels."containerd.io/gc.root"=="true""#]));
        assert!(matches(&["labels.env!=prod"]));
        assert!(
            !matches(&["labels.missing!=prod"]),
            "absent fields match nothing"
        );
        assert!(matches(&[r#"name == "docker.io/library/busybox:latest" "#]));
    }

    #[test]
    fn commas_are_and_strings_are_or() {
        assert!(matches(&["labels.env==dev,name~=busybox"]));
        assert!(!matches(&["labels.env==dev,name~=alpine"]));
        assert!(matches(&["name~=alpine", "labels.env==dev"]));
        assert!(!matches(&["name~=alpine", "labels.env==prod"]));
        assert!(matches(&[r"name~=^docker\.io/library/"]));
    }

    #[test]
    fn malformed_filters_are_invalid_arguments() {
        for bad in [
            "==x",
            "name==",
            "name~=(",
            "labels.\"open",
            "name==a,",
            "a b",
        ] {
            let err = Filter::parse(bad).map(|_| ()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad:?}");
            assert!(err.message.contains(&format!("{bad:?}")), "{}", err.message);
        }
    }
}
