//! Dockerfile text to [`Dockerfile`]: physical lines to logical lines
//! (directives, comments, continuations), then each logical line to an
//! instruction, then instructions to stages.

use std::collections::HashSet;
use std::time::Duration;

use super::{
    ArgDecl, Command, CopyArgs, Dockerfile, Healthcheck, Instruction, InstructionKind, ParseError,
    Stage, DEFAULT_ESCAPE,
};

/// Parses a Dockerfile.
///
/// Errors carry the 1-based line of the offending instruction and read like
/// the classic builder's (`dockerfile parse error line 2: unknown
/// instruction: FOO`). A file with no instructions, or whose first
/// instruction other than `ARG` is not `FROM`, is an error too.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let (escape, lines) = logical_lines(text)?;
    if lines.is_empty() {
        return Err(ParseError::general("file with no instructions"));
    }

    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for logical in &lines {
        match parse_line(&logical.text, logical.line, escape)? {
            Parsed::From(stage) => {
                if let Some(name) = &stage.name {
                    if stages.iter().any(|s| s.name.as_ref() == Some(name)) {
                        return Err(ParseError::at(
                            logical.line,
                            format!("duplicate stage name {name:?}"),
                        ));
                    }
                }
                stages.push(stage);
            }
            Parsed::Instruction(instruction) => match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None => match instruction.kind {
                    InstructionKind::Arg(decls) => meta_args.extend(decls),
                    _ => {
                        return Err(ParseError::general("no build stage in current context"));
                    }
                },
            },
        }
    }
    if stages.is_empty() {
        return Err(ParseError::general("no build stage in current context"));
    }
    Ok(Dockerfile {
        escape,
        meta_args,
        stages,
    })
}

// ---------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------

/// An instruction's text with its continuation lines joined.
#[derive(Debug)]
struct LogicalLine {
    /// 1-based line where it starts.
    line: usize,
    text: String,
}

/// State of parser directive recognition.
struct Directives {
    escape: char,
    /// Directives are only recognised until the first line that is not one.
    done: bool,
    seen: HashSet<String>,
}

impl Directives {
    fn check(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if key != "escape" && key != "syntax" {
            self.done = true;
            return Ok(());
        }
        if !self.seen.insert(key.clone()) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        if key == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    ))
                }
            };
        }
        Ok(())
    }
}

/// Recognises `# key = value` (key: a letter then letters/digits).
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_alphanumeric())
        .map_or(rest.len(), |(i, _)| i);
    let key = &rest[..key_len];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest[key_len..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key, value))
}

/// Whether a physical line is a comment (first non-blank character `#`).
fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Strips a trailing escape character (and any spaces or tabs after it);
/// returns the remaining text and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(rest) => (rest, false),
        None => (line, true),
    }
}

/// Splits the text into logical lines, applying parser directives,
/// dropping comments and blank lines and joining continuations. Returns the
/// escape character in effect.
fn logical_lines(text: &str) -> Result<(char, Vec<LogicalLine>), ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let physical: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut directives = Directives {
        escape: DEFAULT_ESCAPE,
        done: false,
        seen: HashSet::new(),
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < physical.len() {
        let start = i + 1;
        let first = physical[i].trim_start();
        i += 1;
        directives
            .check(first)
            .map_err(|m| ParseError::at(start, m))?;
        let first = if first.starts_with('#') { "" } else { first };
        let (text, mut ended) = trim_continuation(first, directives.escape);
        if ended && text.is_empty() {
            continue;
        }
        let mut joined = text.to_owned();
        while !ended && i < physical.len() {
            let line = physical[i];
            i += 1;
            // Comments and blank lines inside a continuation are dropped.
            if is_comment(line) || line.trim().is_empty() {
                continue;
            }
            let (text, end) = trim_continuation(line, directives.escape);
            joined.push_str(text);
            ended = end;
        }
        out.push(LogicalLine {
            line: start,
            text: joined,
        });
    }
    Ok((directives.escape, out))
}

// ---------------------------------------------------------------------------
// Instructions
// ---------------------------------------------------------------------------

enum Parsed {
    From(Stage),
    Instruction(Instruction),
}

/// Whitespace that separates the instruction keyword and plain word lists.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// Splits on runs of separator whitespace (the text is already trimmed).
fn split_whitespace(text: &str) -> Vec<String> {
    text.split(is_separator)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Splits a logical line into the lowercased keyword, its `--flags` and the
/// remaining argument text.
fn split_command(line: &str) -> (String, String, Vec<String>, String) {
    let line = line.trim();
    let (keyword, rest) = match line.find(is_separator) {
        Some(i) => (&line[..i], line[i..].trim_start_matches(is_separator)),
        None => (line, ""),
    };
    let (args, flags) = extract_flags(rest);
    (
        keyword.to_lowercase(),
        keyword.to_owned(),
        flags,
        args.trim().to_owned(),
    )
}

/// Takes the leading `--name[=value]` words off `text`; returns the rest and
/// the flag words (quotes removed, `\` escaping the next character). A bare
/// `--` ends the flags.
fn extract_flags(text: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if !rest.starts_with("--") {
            return (rest, flags);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut end = rest.len();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = i;
                    break;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                }
                _ => word.push(c),
            }
        }
        rest = &rest[end..];
        if word == "--" {
            return (rest, flags);
        }
        flags.push(word);
    }
}

/// The kinds of flag values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagType {
    Bool,
    String,
}

/// Parsed flag values, by name (booleans as `"true"`/`"false"`).
struct FlagValues(Vec<(&'static str, String)>);

impl FlagValues {
    fn string(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn is_true(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }
}

/// Validates `flags` against the flags an instruction accepts.
fn parse_flags(
    flags: &[String],
    allowed: &[(&'static str, FlagType)],
) -> Result<FlagValues, String> {
    let mut values: Vec<(&'static str, String)> = Vec::new();
    for flag in flags {
        let Some(body) = flag.strip_prefix("--") else {
            return Err(format!("Arg should start with -- : {flag}"));
        };
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let Some(&(known, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
            return Err(format!("Unknown flag: {name}"));
        };
        if values.iter().any(|(n, _)| *n == known) {
            return Err(format!("Duplicate flag specified: {name}"));
        }
        let value = match (kind, value) {
            (FlagType::Bool, None) => "true".to_owned(),
            (FlagType::Bool, Some("")) | (FlagType::String, None) => {
                return Err(format!("Missing a value on flag: {name}"))
            }
            (FlagType::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                b @ ("true" | "false") => b.to_owned(),
                _ => return Err(format!("Expecting boolean value for flag {name}, not: {v}")),
            },
            (FlagType::String, Some(v)) => v.to_owned(),
        };
        values.push((known, value));
    }
    Ok(FlagValues(values))
}

/// `RUN` flags that exist only in BuildKit.
const BUILDKIT_RUN_FLAGS: &[&str] = &["mount", "network", "security", "device"];

/// Flags of `ADD` that only BuildKit implements.
const BUILDKIT_ADD_FLAGS: &[&str] = &["checksum", "keep-git-dir"];

fn requires_buildkit(flag: &str) -> String {
    format!(
        "the --{flag} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ \
         to learn how to build images with BuildKit enabled"
    )
}

/// The name of a `--flag[=value]` word.
fn flag_name(flag: &str) -> &str {
    let body = flag.strip_prefix("--").unwrap_or(flag);
    body.split_once('=').map_or(body, |(name, _)| name)
}

fn at_least_one(keyword: &str) -> String {
    format!("{keyword} requires at least one argument")
}

fn exactly_one(keyword: &str) -> String {
    format!("{keyword} requires exactly one argument")
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// The exec (JSON array) form: `Ok(Some(..))` for a JSON array of strings,
/// `Ok(None)` when the text is not a JSON array (shell form), an error for a
/// JSON array holding something other than strings.
fn json_array(text: &str) -> Result<Option<Vec<String>>, String> {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(NOT_STRING_ARRAY.to_owned()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Exec form if the text is a JSON array of strings, else shell form.
fn command_arg(rest: &str) -> Result<Command, String> {
    Ok(match json_array(rest)? {
        Some(argv) => Command::Exec(argv),
        None => Command::Shell(rest.to_owned()),
    })
}

/// A JSON array, or else whitespace-separated words.
fn json_or_words(rest: &str) -> Result<Vec<String>, String> {
    Ok(match json_array(rest)? {
        Some(words) => words,
        None => split_whitespace(rest),
    })
}

/// Splits on unquoted whitespace, keeping quotes and escapes in the words
/// (expansion removes them later). A word made only of quotes (`""`) is
/// kept; a trailing escape character is dropped.
fn parse_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    in_word = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    // A trailing escape is dropped.
                    if let Some(next) = chars.next() {
                        word.push(ch);
                        word.push(next);
                    }
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    match chars.next() {
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                        None => quote = None,
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// `ENV`/`LABEL` arguments: `k=v ...` pairs, or the legacy `k the rest`.
fn name_value_pairs(
    rest: &str,
    keyword: &str,
    escape: char,
) -> Result<Vec<(String, String)>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(at_least_one(keyword));
    };
    let pairs = if !first.contains('=') {
        let Some(i) = rest.find(is_separator) else {
            return Err(format!("{keyword} must have two arguments"));
        };
        vec![(
            rest[..i].to_owned(),
            rest[i..].trim_start_matches(is_separator).to_owned(),
        )]
    } else {
        words
            .iter()
            .map(|word| match word.split_once('=') {
                Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
                None => Err(format!(
                    "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if pairs.iter().any(|(k, _)| k.is_empty()) {
        return Err(format!("{keyword} names can not be blank"));
    }
    Ok(pairs)
}

/// A stage name must start with a letter and hold only letters, digits,
/// `-`, `_` and `.` (checked lowercased).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Parses one logical line.
fn parse_line(text: &str, line: usize, escape: char) -> Result<Parsed, ParseError> {
    let original = text.trim().to_owned();
    let (keyword, spelled, flags, rest) = split_command(text);
    let err = |m: String| ParseError::at(line, m);
    if keyword == "from" {
        return parse_from(&flags, &rest, line, original).map_err(err);
    }
    let kind = parse_kind(&keyword, &spelled, &flags, &rest, line, escape)?;
    Ok(Parsed::Instruction(Instruction {
        line,
        original,
        kind,
    }))
}

fn parse_from(
    flags: &[String],
    rest: &str,
    line: usize,
    original: String,
) -> Result<Parsed, String> {
    let args = split_whitespace(rest);
    let name = match args.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lowered = name.to_lowercase();
            if !valid_stage_name(&lowered) {
                return Err(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                ));
            }
            Some(lowered)
        }
        _ => return Err("FROM requires either one or three arguments".to_owned()),
    };
    let flags = parse_flags(flags, &[("platform", FlagType::String)])?;
    Ok(Parsed::From(Stage {
        name,
        base: args[0].clone(),
        platform: flags.string("platform"),
        line,
        original,
        instructions: Vec::new(),
    }))
}

/// Parses everything but `FROM`.
fn parse_kind(
    keyword: &str,
    spelled: &str,
    flags: &[String],
    rest: &str,
    line: usize,
    escape: char,
) -> Result<InstructionKind, ParseError> {
    let err = |m: String| ParseError::at(line, m);
    let no_flags = |flags: &[String]| parse_flags(flags, &[]).map(|_| ()).map_err(err);
    let kind = match keyword {
        "run" => {
            if let Some(flag) = flags
                .iter()
                .find(|f| BUILDKIT_RUN_FLAGS.contains(&flag_name(f)))
            {
                return Err(err(requires_buildkit(flag_name(flag))));
            }
            no_flags(flags)?;
            if rest.is_empty() {
                return Err(err(at_least_one("RUN")));
            }
            InstructionKind::Run(command_arg(rest).map_err(err)?)
        }
        "cmd" | "entrypoint" => {
            no_flags(flags)?;
            let upper = keyword.to_ascii_uppercase();
            if rest.is_empty() {
                return Err(err(at_least_one(&upper)));
            }
            let command = command_arg(rest).map_err(err)?;
            if keyword == "cmd" {
                InstructionKind::Cmd(command)
            } else {
                InstructionKind::Entrypoint(command)
            }
        }
        "copy" | "add" => parse_copy(keyword, flags, rest).map_err(err)?,
        "env" | "label" => {
            no_flags(flags)?;
            let upper = keyword.to_ascii_uppercase();
            let pairs = name_value_pairs(rest, &upper, escape).map_err(err)?;
            if keyword == "env" {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            }
        }
        "arg" => {
            no_flags(flags)?;
            let words = parse_words(rest, escape);
            if words.is_empty() {
                return Err(err(at_least_one("ARG")));
            }
            let decls = words
                .into_iter()
                .map(|word| match word.split_once('=') {
                    Some(("", _)) => Err(err("ARG names can not be blank".to_owned())),
                    Some((name, default)) => Ok(ArgDecl {
                        name: name.to_owned(),
                        default: Some(default.to_owned()),
                    }),
                    None => Ok(ArgDecl {
                        name: word,
                        default: None,
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            InstructionKind::Arg(decls)
        }
        "workdir" | "user" | "stopsignal" | "maintainer" => {
            no_flags(flags)?;
            let upper = keyword.to_ascii_uppercase();
            if rest.is_empty() {
                return Err(err(exactly_one(&upper)));
            }
            let value = rest.to_owned();
            match keyword {
                "workdir" => InstructionKind::Workdir(value),
                "user" => InstructionKind::User(value),
                "stopsignal" => InstructionKind::StopSignal(value),
                _ => InstructionKind::Maintainer(value),
            }
        }
        "expose" => {
            no_flags(flags)?;
            let ports = split_whitespace(rest);
            if ports.is_empty() {
                return Err(err(at_least_one("EXPOSE")));
            }
            InstructionKind::Expose(ports)
        }
        "volume" => {
            no_flags(flags)?;
            let volumes = json_or_words(rest).map_err(err)?;
            if volumes.is_empty() {
                return Err(err(at_least_one("VOLUME")));
            }
            let volumes = volumes
                .into_iter()
                .map(|v| {
                    let v = v.trim();
                    if v.is_empty() {
                        Err(err("VOLUME specified can not be an empty string".to_owned()))
                    } else {
                        Ok(v.to_owned())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            InstructionKind::Volume(volumes)
        }
        "shell" => {
            no_flags(flags)?;
            match json_array(rest).map_err(err)? {
                Some(shell) if !shell.is_empty() => InstructionKind::Shell(shell),
                Some(_) => return Err(err(at_least_one("SHELL"))),
                None if rest.is_empty() => return Err(err(at_least_one("SHELL"))),
                None => {
                    return Err(err(
                        "SHELL requires the arguments to be in JSON form".to_owned()
                    ))
                }
            }
        }
        "healthcheck" => InstructionKind::Healthcheck(parse_healthcheck(flags, rest).map_err(err)?),
        "onbuild" => {
            no_flags(flags)?;
            if rest.is_empty() {
                return Err(err(at_least_one("ONBUILD")));
            }
            let (inner_keyword, _, _, _) = split_command(rest);
            match inner_keyword.as_str() {
                "onbuild" => {
                    return Err(err(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_owned()
                    ))
                }
                "from" | "maintainer" => {
                    return Err(err(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        inner_keyword.to_ascii_uppercase()
                    )))
                }
                _ => {}
            }
            match parse_line(rest, line, escape)? {
                Parsed::Instruction(inner) => InstructionKind::Onbuild(Box::new(inner)),
                // Excluded above; kept as an error rather than a panic.
                Parsed::From(_) => {
                    return Err(err("FROM isn't allowed as an ONBUILD trigger".to_owned()))
                }
            }
        }
        _ => {
            return Err(err(format!(
                "unknown instruction: {}",
                spelled.to_uppercase()
            )))
        }
    };
    Ok(kind)
}

fn parse_copy(keyword: &str, flags: &[String], rest: &str) -> Result<InstructionKind, String> {
    let is_copy = keyword == "copy";
    let upper = if is_copy { "COPY" } else { "ADD" };
    let words = json_or_words(rest)?;
    if words.len() < 2 {
        return Err(format!(
            "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let values = if is_copy {
        parse_flags(
            flags,
            &[
                ("chown", FlagType::String),
                ("from", FlagType::String),
                ("chmod", FlagType::String),
                ("link", FlagType::Bool),
            ],
        )?
    } else {
        let values = parse_flags(
            flags,
            &[
                ("chown", FlagType::String),
                ("chmod", FlagType::String),
                ("link", FlagType::Bool),
                ("keep-git-dir", FlagType::Bool),
                ("checksum", FlagType::String),
            ],
        )?;
        if let Some(flag) = flags
            .iter()
            .map(|f| flag_name(f))
            .find(|f| BUILDKIT_ADD_FLAGS.contains(f))
        {
            return Err(requires_buildkit(flag));
        }
        values
    };
    let mut sources = words;
    let dest = sources.pop().unwrap_or_default();
    let args = CopyArgs {
        sources,
        dest,
        from: values.string("from"),
        chown: values.string("chown"),
        chmod: values.string("chmod"),
        link: values.is_true("link"),
    };
    Ok(if is_copy {
        InstructionKind::Copy(args)
    } else {
        InstructionKind::Add(args)
    })
}

fn parse_healthcheck(flags: &[String], rest: &str) -> Result<Healthcheck, String> {
    let (kind, command) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, ""),
    };
    if kind.is_empty() {
        return Err(at_least_one("HEALTHCHECK"));
    }
    let kind = kind.to_uppercase();
    if kind == "NONE" {
        if !command.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".to_owned());
        }
        return Ok(Healthcheck::None);
    }
    let values = parse_flags(
        flags,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    if kind != "CMD" {
        return Err(format!("Unknown type {kind:?} in HEALTHCHECK (try CMD)"));
    }
    let test = match json_array(command)? {
        Some(argv) if argv.is_empty() => None,
        Some(argv) => Some(Command::Exec(argv)),
        None if command.is_empty() => None,
        None => Some(Command::Shell(command.to_owned())),
    };
    let Some(test) = test else {
        return Err("Missing command after HEALTHCHECK CMD".to_owned());
    };
    let interval = |name: &str| -> Result<Option<Duration>, String> {
        match values.string(name) {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => {
                let d = parse_go_duration(&text)?;
                if d == 0 {
                    Ok(None)
                } else if d < 1_000_000 {
                    Err(format!("Interval {name:?} cannot be less than 1ms"))
                } else {
                    let nanos = u64::try_from(d).unwrap_or(u64::MAX);
                    Ok(Some(Duration::from_nanos(nanos)))
                }
            }
        }
    };
    let interval_value = interval("interval")?;
    let timeout = interval("timeout")?;
    let start_period = interval("start-period")?;
    let start_interval = interval("start-interval")?;
    let retries = match values.string("retries") {
        None => None,
        Some(text) if text.is_empty() => None,
        Some(text) => {
            let n: i128 = text
                .parse()
                .map_err(|_| format!("strconv.ParseInt: parsing {text:?}: invalid syntax"))?;
            if i32::try_from(n).is_err() {
                return Err(format!(
                    "strconv.ParseInt: parsing {text:?}: value out of range"
                ));
            }
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            Some(u32::try_from(n).unwrap_or(u32::MAX))
        }
    };
    Ok(Healthcheck::Cmd {
        test,
        interval: interval_value,
        timeout,
        start_period,
        start_interval,
        retries,
    })
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `-1s`, `0`) into
/// nanoseconds. Units: ns, us (µs, μs), ms, s, m, h.
pub(super) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, after) = s.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(frac) => {
                let len = frac
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(frac.len());
                frac.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {text:?}"));
        }
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
        let mut frac_scale = scale;
        for digit in frac_part.bytes() {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            value += i128::from(digit - b'0') * frac_scale;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
        s = next;
    }
    Ok(if negative { -total } else { total })
}
