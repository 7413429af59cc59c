//! `.dockerignore`: which build context paths are left out.
//!
//! Semantics follow Docker's pattern matcher:
//!
//! * one pattern per line; lines starting with `#` are comments; surrounding
//!   whitespace is trimmed and blank lines are skipped;
//! * `!pattern` is an exception: it re-includes what earlier patterns
//!   excluded; the last pattern that matches a path decides;
//! * patterns are cleaned like paths (`./a`, `a//b`, `a/../b`) and a leading
//!   `/` is dropped: every pattern is relative to the context root;
//! * `*` matches any run of characters except `/`, `?` one character except
//!   `/`, `[...]`/`[^...]` a character class, `\` escapes the next
//!   character, and `**` any number of directories (including none);
//! * a pattern that matches a directory matches everything below it.
//!
//! Whether `Dockerfile` and `.dockerignore` themselves are sent is the
//! caller's business.

use regex::Regex;

use super::ParseError;

/// Compiled `.dockerignore` rules.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern, without the `!`.
    text: String,
    exclusion: bool,
    matcher: Matcher,
}

/// How a pattern is matched; the plain forms avoid regexes, and keep the
/// matcher's exact behaviour for `prefix**` and `**suffix` patterns.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

const BAD_PATTERN: &str = "syntax error in pattern";

impl IgnoreRules {
    /// Parses the text of a `.dockerignore` file.
    ///
    /// Errors (an exception `!` with no pattern, a malformed pattern such as
    /// an unclosed `[`) name the offending line in their message and have no
    /// `line`, so they do not display as Dockerfile errors.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let pattern = Pattern::new(line).map_err(|message| {
                ParseError::general(format!(
                    "error parsing .dockerignore line {}: {message}",
                    index + 1
                ))
            })?;
            patterns.push(pattern);
        }
        Ok(Self { patterns })
    }

    /// Whether there are no patterns at all (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the context path `rel_path` (slash-separated, relative to the
    /// context root; a leading `/` or `./` is tolerated) is excluded, either
    /// itself or through one of its parent directories.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path.trim_start_matches('/'));
        if path == "." || path == "/" {
            return false;
        }
        let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the outcome needs a look.
            if pattern.exclusion != excluded {
                continue;
            }
            let matched = pattern.matches(&path) || parents.iter().any(|p| pattern.matches(p));
            if matched {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// For an excluded directory, whether something below it may still be
    /// re-included by a `!` exception, so that a context walk must descend
    /// into it (checking each entry with [`Self::is_excluded`]) instead of
    /// skipping it whole.
    ///
    /// Conservative: it may answer `true` when nothing below ends up
    /// included, never `false` when something could be.
    pub fn may_contain_included(&self, dir_rel: &str) -> bool {
        let dir = clean(dir_rel.trim_start_matches('/'));
        let exceptions = self.patterns.iter().filter(|p| p.exclusion);
        if dir == "." || dir == "/" {
            return exceptions.count() > 0;
        }
        let dir_parts: Vec<&str> = dir.split('/').collect();
        exceptions
            .into_iter()
            .any(|p| may_match_below(&p.text, &dir_parts))
    }
}

impl Pattern {
    /// Builds a pattern from a trimmed, non-empty line.
    fn new(line: &str) -> Result<Self, String> {
        let (exclusion, body) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if exclusion && body.is_empty() {
            return Err("illegal exclusion pattern: \"!\"".to_owned());
        }
        let mut text = clean(body);
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        let matcher = compile(&text)?;
        Ok(Self {
            text,
            exclusion,
            matcher,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(p) => path == p,
            Matcher::Prefix(p) => path.starts_with(p.as_str()),
            Matcher::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|s| path == s)
            }
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Compiles a cleaned pattern.
fn compile(pattern: &str) -> Result<Matcher, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is the same as `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    re.push_str(&regex::escape(&next.to_string()));
                    kind = Kind::Regex;
                }
                None => return Err(BAD_PATTERN.to_owned()),
            },
            '[' => {
                let (class, next) = char_class(&chars, i)?;
                re.push_str(&class);
                i = next;
                kind = Kind::Regex;
            }
            ']' => {
                re.push_str("\\]");
                kind = Kind::Regex;
            }
            _ => re.push_str(&regex::escape(&ch.to_string())),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_owned()),
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_owned()),
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_owned()),
        Kind::Regex => {
            re.push('$');
            Matcher::Regex(Regex::new(&re).map_err(|_| BAD_PATTERN.to_owned())?)
        }
    })
}

/// Parses a `[...]` class starting after the `[` at `start`; returns its
/// regex and the index after the closing `]`. Like Go's `filepath.Match`:
/// `^` negates, ranges are `lo-hi`, `\` escapes, and the class must be
/// non-empty (`[]`, `[-a]`, `[a-]` and an unclosed `[` are errors).
fn char_class(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let bad = || BAD_PATTERN.to_owned();
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    // One possibly escaped class character.
    let escaped_char = |i: &mut usize| -> Result<char, String> {
        let c = *chars.get(*i).ok_or_else(bad)?;
        if c == '-' || c == ']' {
            return Err(bad());
        }
        *i += 1;
        if c == '\\' {
            let c = *chars.get(*i).ok_or_else(bad)?;
            *i += 1;
            return Ok(c);
        }
        Ok(c)
    };
    let mut items = String::new();
    let mut ranges = 0;
    loop {
        if chars.get(i) == Some(&']') && ranges > 0 {
            i += 1;
            break;
        }
        let lo = escaped_char(&mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            hi = escaped_char(&mut i)?;
        }
        if i >= chars.len() {
            return Err(bad());
        }
        // A reversed range matches nothing.
        if lo <= hi {
            items.push_str(&format!("\\x{{{:x}}}-\\x{{{:x}}}", lo as u32, hi as u32));
        }
        ranges += 1;
    }
    let class = match (negated, items.is_empty()) {
        (false, true) => "[^\\s\\S]".to_owned(),
        (true, true) => "[\\s\\S]".to_owned(),
        (false, false) => format!("[{items}]"),
        (true, false) => format!("[^{items}]"),
    };
    Ok((class, i))
}

/// Whether the pattern `pattern` could match a path below the directory
/// whose components are `dir`: each directory component must match the
/// corresponding pattern component (`**` may match anything).
fn may_match_below(pattern: &str, dir: &[&str]) -> bool {
    let parts: Vec<&str> = pattern.split('/').collect();
    for (i, component) in dir.iter().enumerate() {
        let Some(part) = parts.get(i) else {
            // The pattern matches the directory or a parent: conservative.
            return true;
        };
        if part.contains("**") {
            return true;
        }
        match compile(part) {
            Ok(matcher) => {
                let matches = match &matcher {
                    Matcher::Exact(p) => component == p,
                    Matcher::Regex(re) => re.is_match(component),
                    _ => true,
                };
                if !matches {
                    return false;
                }
            }
            // A component that does not stand alone (e.g. a class holding
            // a `/`): conservative.
            Err(_) => return true,
        }
    }
    true
}

/// Lexically cleans a slash-separated path like Go's `path.Clean`: collapses
/// `//`, drops `.`, resolves `..`, removes trailing `/`; empty gives `.`.
pub(super) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}
