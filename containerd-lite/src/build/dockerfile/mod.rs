//! The Dockerfile front end of the classic (non-BuildKit) `docker build`.
//!
//! Three pieces, each usable on its own:
//!
//! * [`parse`] turns Dockerfile text into [`Dockerfile`]: parser directives,
//!   line continuations, comments, instruction flags and the per-instruction
//!   argument forms (exec/JSON vs shell, `ENV k=v` vs `ENV k v`, ...), grouped
//!   into build stages. Words are kept *unexpanded*: variable substitution
//!   depends on build state (ARG/ENV values), so it is the builder's job.
//! * [`expand_word`] / [`expand_words`] do that substitution the way the
//!   Docker builder does: quote removal, escapes, `$VAR`, `${VAR}` and the
//!   `${VAR:-x}` family.
//! * [`IgnoreRules`] reads `.dockerignore` and answers whether a context path
//!   is excluded.
//!
//! Behaviour follows the Dockerfile reference and the classic builder;
//! heredocs and the BuildKit-only `RUN` flags are not supported (the classic
//! builder does not support them either).

mod ignore;
mod parser;
mod shell;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use ignore::IgnoreRules;
pub use parser::parse;
pub use shell::{expand_word, expand_words, ExpandError};

/// The escape character used when no `# escape=` directive is given.
pub const DEFAULT_ESCAPE: char = '\\';

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dockerfile {
    /// The escape character in effect (`\` or `` ` ``, from `# escape=`);
    /// pass it to [`expand_word`] / [`expand_words`].
    pub escape: char,
    /// The `ARG` declarations that precede the first `FROM` (usable in `FROM`
    /// lines, and re-declarable inside stages).
    pub meta_args: Vec<ArgDecl>,
    /// The build stages, in file order (at least one).
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The index of the stage named `name` (stage names are
    /// case-insensitive), if any.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let name = name.to_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(name.as_str()))
    }
}

/// One build stage: a `FROM` line and the instructions that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// The `AS` name, lowercased; `None` for an unnamed stage.
    pub name: Option<String>,
    /// The base image word as written (unexpanded; may name an earlier
    /// stage, `scratch`, or contain `$VAR` references to meta ARGs).
    pub base: String,
    /// The `--platform=` value as written (unexpanded), if given.
    pub platform: Option<String>,
    /// The 1-based line of the `FROM` instruction.
    pub line: usize,
    /// The `FROM` instruction as written (continuations joined, trimmed).
    pub original: String,
    /// The stage's instructions, in order (the `FROM` itself excluded).
    pub instructions: Vec<Instruction>,
}

/// One instruction (other than `FROM`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// The 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction as written, continuation lines joined (without the
    /// escape characters that joined them) and surrounding whitespace
    /// trimmed, e.g. `RUN echo hi`. Used for `docker history` and cache keys.
    pub original: String,
    /// What the instruction is, with its parsed arguments.
    pub kind: InstructionKind,
}

/// An instruction and its arguments. Word arguments are unexpanded; quotes
/// and escapes are kept wherever [`expand_word`] is expected to process them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstructionKind {
    /// `RUN`: a command run in a container and committed as a layer.
    Run(Command),
    /// `CMD`: the image's default command (or default entrypoint arguments).
    Cmd(Command),
    /// `ENTRYPOINT`: the image's entrypoint. `ENTRYPOINT []` is an empty
    /// exec form, which clears the entrypoint.
    Entrypoint(Command),
    /// `COPY`: copies from the context or from another stage/image.
    Copy(CopyArgs),
    /// `ADD`: like `COPY`, plus remote URLs and local tar extraction.
    Add(CopyArgs),
    /// `ENV`: environment variables, as `(name, value)` pairs in order, both
    /// unexpanded (quotes and escapes kept). The legacy `ENV name the rest`
    /// form gives one pair whose value is the rest of the line.
    Env(Vec<(String, String)>),
    /// `LABEL`: labels, with the same forms and conventions as [`Self::Env`].
    Label(Vec<(String, String)>),
    /// `ARG`: one or more build argument declarations.
    Arg(Vec<ArgDecl>),
    /// `WORKDIR`: the rest of the line, unexpanded.
    Workdir(String),
    /// `USER`: the rest of the line, unexpanded.
    User(String),
    /// `EXPOSE`: the whitespace-separated port words, unexpanded.
    Expose(Vec<String>),
    /// `VOLUME`: the paths (JSON array form or whitespace-separated words),
    /// unexpanded.
    Volume(Vec<String>),
    /// `STOPSIGNAL`: the rest of the line, unexpanded.
    StopSignal(String),
    /// `SHELL`: the new default shell (JSON array form only, non-empty).
    Shell(Vec<String>),
    /// `HEALTHCHECK`: a check, or `NONE` to disable the inherited one.
    Healthcheck(Healthcheck),
    /// `ONBUILD`: a trigger instruction stored in the image and run by
    /// builds that use it as a base. The inner instruction carries the
    /// trigger's own text as `original` (without `ONBUILD`), which is what
    /// goes into the image config.
    Onbuild(Box<Instruction>),
    /// `MAINTAINER` (deprecated): the rest of the line.
    Maintainer(String),
}

impl InstructionKind {
    /// The instruction keyword in upper case, e.g. `"RUN"`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Run(_) => "RUN",
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Copy(_) => "COPY",
            Self::Add(_) => "ADD",
            Self::Env(_) => "ENV",
            Self::Label(_) => "LABEL",
            Self::Arg(_) => "ARG",
            Self::Workdir(_) => "WORKDIR",
            Self::User(_) => "USER",
            Self::Expose(_) => "EXPOSE",
            Self::Volume(_) => "VOLUME",
            Self::StopSignal(_) => "STOPSIGNAL",
            Self::Shell(_) => "SHELL",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Onbuild(_) => "ONBUILD",
            Self::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// The command of `RUN`, `CMD`, `ENTRYPOINT` and `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Shell form: the text as written, to be run with the stage's `SHELL`
    /// (default `/bin/sh -c`). Not expanded by the builder; the shell does it.
    Shell(String),
    /// Exec form (a JSON array of strings), run as is, without a shell.
    Exec(Vec<String>),
}

/// The arguments of `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyArgs {
    /// The source words (at least one), unexpanded.
    pub sources: Vec<String>,
    /// The destination word, unexpanded.
    pub dest: String,
    /// `--from=` (COPY only): a stage name or index, or an image reference.
    pub from: Option<String>,
    /// `--chown=` as written (flag quotes removed, otherwise unexpanded).
    pub chown: Option<String>,
    /// `--chmod=` as written (flag quotes removed).
    pub chmod: Option<String>,
    /// `--link` was given. The classic builder has no layer linking; the
    /// flag is accepted and can be ignored.
    pub link: bool,
}

/// One declaration of an `ARG` instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgDecl {
    /// The argument name, as written.
    pub name: String,
    /// The default value, unexpanded (quotes kept), if `name=value` was used.
    pub default: Option<String>,
}

/// A `HEALTHCHECK` instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any healthcheck inherited from the base.
    None,
    /// `HEALTHCHECK [OPTIONS] CMD command`.
    Cmd {
        /// The check: shell form is Docker's `CMD-SHELL`, exec form `CMD`.
        test: Command,
        /// `--interval`; `None` when absent or zero (inherit/default).
        interval: Option<Duration>,
        /// `--timeout`; `None` when absent or zero.
        timeout: Option<Duration>,
        /// `--start-period`; `None` when absent or zero.
        start_period: Option<Duration>,
        /// `--start-interval`; `None` when absent or zero.
        start_interval: Option<Duration>,
        /// `--retries`, if given.
        retries: Option<u32>,
    },
}

/// A Dockerfile (or `.dockerignore`) that could not be parsed.
///
/// Displays like the classic builder: `dockerfile parse error line 3:
/// unknown instruction: FOO` when the error belongs to a line, the bare
/// message otherwise (as for `no build stage in current context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line the error belongs to, if it belongs to one.
    pub line: Option<usize>,
    /// The message, without the line prefix.
    pub message: String,
}

impl ParseError {
    /// An error on a given 1-based line.
    pub fn at(line: usize, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            message: message.into(),
        }
    }

    /// An error that belongs to no particular line.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "dockerfile parse error line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}
