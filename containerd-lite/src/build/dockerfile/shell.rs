//! Word processing for Dockerfile instructions: quote removal, escapes and
//! environment variable substitution, as the Docker builder applies them to
//! `FROM`, `COPY`/`ADD`, `ENV`, `LABEL`, `ARG`, `WORKDIR`, `USER`, `EXPOSE`,
//! `VOLUME` and `STOPSIGNAL` arguments.
//!
//! The rules, a small subset of POSIX shell:
//!
//! * `'...'` is literal; the quotes are removed.
//! * `"..."` is literal except for `$` substitutions; inside it the escape
//!   character only escapes `"`, `$` and itself (otherwise it is kept).
//! * Outside quotes the escape character makes the next character literal
//!   (and is removed); a trailing escape is dropped.
//! * `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`,
//!   `${NAME+word}`, `${NAME:?msg}`, `${NAME?msg}`, plus `${NAME#pat}`,
//!   `${NAME##pat}`, `${NAME%pat}`, `${NAME%%pat}`, `${NAME/pat/repl}` and
//!   `${NAME//pat/repl}`. Unset variables expand to nothing. A `$` not
//!   followed by a name is literal.
//!
//! Word splitting ([`expand_words`]) happens after substitution, on
//! unquoted, unescaped whitespace, including whitespace that came out of a
//! substitution.

use std::fmt;

use regex::Regex;

/// A word that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    /// The word (or text) being processed.
    pub word: String,
    /// What was wrong, e.g. `syntax error: missing '}'` or, for
    /// `${NAME:?msg}`, `NAME: msg`.
    pub message: String,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to process {:?}: {}", self.word, self.message)
    }
}

impl std::error::Error for ExpandError {}

/// Expands one word: removes quotes, processes escapes (with `escape`, `\`
/// or `` ` ``) and substitutes variables looked up through `env` (`None` =
/// unset). Whitespace is kept as is.
pub fn expand_word(
    word: &str,
    escape: char,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut lexer = Lexer::new(word, escape, env);
    lexer
        .process_until(None, false)
        .map(|(result, _)| result)
        .map_err(|message| ExpandError {
            word: word.to_owned(),
            message,
        })
}

/// Like [`expand_word`], then splits the result into words on whitespace
/// that was neither quoted nor escaped. Empty words are dropped (so `""`
/// alone gives no word).
pub fn expand_words(
    text: &str,
    escape: char,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ExpandError> {
    let mut lexer = Lexer::new(text, escape, env);
    lexer
        .process_until(None, false)
        .map(|(_, words)| words)
        .map_err(|message| ExpandError {
            word: text.to_owned(),
            message,
        })
}

type LexResult<T> = Result<T, String>;

const MISSING_BRACE: &str = "syntax error: missing '}'";

/// Accumulates the split words alongside the plain result.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
    in_word: bool,
}

impl Words {
    /// A character subject to splitting.
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.current.is_empty() {
                self.done.push(std::mem::take(&mut self.current));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// A character that never splits (quoted or escaped).
    fn add_raw_char(&mut self, ch: char) {
        self.current.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.current.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    /// Keep escape characters in the output (used for `#`, `%` and `/`
    /// patterns, where the pattern matcher interprets them).
    raw_escapes: bool,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            raw_escapes: false,
            env,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next_char(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes up to `stop` (consumed, not included) or the end of input
    /// when `stop` is `None`; returns the result and its split words.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> LexResult<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_until_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> LexResult<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' => {
                    let value = self.process_single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' => {
                    let value = self.process_double_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // A trailing escape is dropped.
                        let Some(escaped) = self.next_char() else {
                            break;
                        };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn process_single_quote(&mut self) -> LexResult<String> {
        self.pos += 1; // the opening quote
        let mut result = String::new();
        loop {
            match self.next_char() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    )
                }
                Some('\'') => return Ok(result),
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self) -> LexResult<String> {
        self.pos += 1; // the opening quote
        let mut result = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // Reported as an unterminated quote next round.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                ch = next;
                            }
                            // Any other escape stays literal.
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn process_dollar(&mut self) -> LexResult<String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(MISSING_BRACE.to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next_char() {
            None => Err(MISSING_BRACE.to_owned()),
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some(':') => {
                let op = self.next_char();
                let spelled = format!(":{}", op.map(String::from).unwrap_or_default());
                self.process_modifier(&name, op, true, &spelled)
            }
            Some(op @ ('+' | '-' | '?' | '#' | '%')) => {
                self.process_modifier(&name, Some(op), false, &op.to_string())
            }
            Some('/') => self.process_replace(&name),
            Some(other) => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    /// `${name<op>word}`, after the operator; `null_is_unset` for the `:`
    /// variants, which treat an empty value like an unset one.
    fn process_modifier(
        &mut self,
        name: &str,
        op: Option<char>,
        null_is_unset: bool,
        spelled: &str,
    ) -> LexResult<String> {
        let raw = matches!(op, Some('#' | '%'));
        let word = match self.process_until(Some('}'), raw) {
            Ok((word, _)) => word,
            Err(_) if self.peek().is_none() => return Err(MISSING_BRACE.to_owned()),
            Err(err) => return Err(err),
        };
        let value = self.lookup(name);
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            Some('-') => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if unset_or_null { String::new() } else { word }),
            Some('?') => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            Some(op @ ('#' | '%')) => {
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let value = value.unwrap_or_default();
                if op == '%' {
                    trim_suffix(pattern, &value, greedy)
                } else {
                    trim_prefix(pattern, &value, greedy)
                }
            }
            _ => Err(format!("unsupported modifier ({spelled}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`,
    /// after the first `/`.
    fn process_replace(&mut self, name: &str) -> LexResult<String> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.pos += 1;
        }
        let pattern = match self.process_until(Some('/'), true) {
            Ok((pattern, _)) => pattern,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".to_owned())
            }
            Err(err) => return Err(err),
        };
        let replacement = match self.process_until(Some('}'), true) {
            Ok((replacement, _)) => replacement,
            Err(_) if self.peek().is_none() => return Err(MISSING_BRACE.to_owned()),
            Err(err) => return Err(err),
        };
        let value = self.lookup(name).unwrap_or_default();
        let re = shell_pattern_regex(&pattern, true, false)
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
        let replacement = regex::NoExpand(&replacement);
        Ok(if replace_all {
            re.replace_all(&value, replacement).into_owned()
        } else {
            re.replace(&value, replacement).into_owned()
        })
    }

    /// A variable name: letters, digits and `_`; or a run of digits
    /// (positional parameters); or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

/// The POSIX shell special parameters (`$@`, `$#`, ...), which the builder
/// looks up like any other name (normally unset).
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Converts a shell pattern of `${var#pat}` and friends (`*`, `?`, `\`
/// escapes; no bracket expressions) into a regex. `greedy` decides whether
/// `*` matches the longest or the shortest string.
fn shell_pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => match chars.get(i) {
                // `\}` and `\/` only protect the delimiter of `${...}`.
                Some('}' | '/') => {}
                Some(&next @ ('*' | '?' | '\\')) => {
                    i += 1;
                    out.push_str(&regex::escape(&next.to_string()));
                }
                Some(other) => return Err(format!("invalid escape '\\{other}'")),
                None => return Err("invalid escape '\\'".to_owned()),
            },
            _ => out.push_str(&regex::escape(&ch.to_string())),
        }
    }
    Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> LexResult<String> {
    let re = shell_pattern_regex(pattern, greedy, true)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_owned(),
        None => value.to_owned(),
    })
}

/// Reverses a pattern while keeping each `\x` escape pair in order.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens: Vec<String> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            tokens.push([chars[i], chars[i + 1]].iter().collect());
            i += 2;
        } else {
            tokens.push(chars[i].to_string());
            i += 1;
        }
    }
    tokens.into_iter().rev().collect()
}

fn reverse(s: &str) -> String {
    s.chars().rev().collect()
}

/// The shortest (or longest) matching suffix is found as a prefix of the
/// reversed value, since regexes search leftmost.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> LexResult<String> {
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reverse(value), greedy)?;
    Ok(reverse(&trimmed))
}
