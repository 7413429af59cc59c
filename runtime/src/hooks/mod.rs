//! OCI hooks: running the programs listed under `hooks` in `config.json`.
//!
//! Each hook is executed as `path` with `args` (where `args[0]` is
//! `argv[0]`) and exactly the environment given in its `env`. A hook
//! without `env` inherits one, as under runc and crun: hooks run by the
//! runtime get the runtime's own environment ([`run_hooks`]); those run in
//! the container (createContainer, startContainer) get the container
//! process's `process.env` ([`run_hooks_with_env`]). Docker's prestart
//! hook, for one, has no `env`. The container state JSON is
//! written to its stdin, which is then closed. Its stdout and stderr are
//! captured; the beginning of both is reported if it fails. A hook fails if
//! it cannot be started, exits non-zero, is killed by a signal, or runs
//! longer than its `timeout` (it is then killed with `SIGKILL`).
//!
//! Hooks of one kind run sequentially, in the order listed. No threads are
//! spawned: the pipes are multiplexed with `poll(2)`, so these functions may
//! be called from a freshly forked single-threaded child before `exec`.
//!
//! The hook is reaped with `waitpid` on its own pid; a caller that reaps
//! all children itself (e.g. `waitpid(-1)` in a `SIGCHLD` handler) would
//! race with this. Writing to a hook that exits without reading its stdin
//! relies on `SIGPIPE` being ignored, as it is in every Rust program
//! (`EPIPE` is then ignored here).

mod error;
mod run;

use std::fmt;

use oci_spec::runtime::{Hook, Hooks};

pub use error::{Error, Failure};

/// The lifecycle points at which hooks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// `prestart` (deprecated): after the container's namespaces are
    /// created, before `pivot_root`; runs in the runtime namespace.
    Prestart,
    /// `createRuntime`: during `create`, in the runtime namespace.
    CreateRuntime,
    /// `createContainer`: during `create`, in the container namespace.
    CreateContainer,
    /// `startContainer`: during `start`, in the container, before the
    /// user process is executed.
    StartContainer,
    /// `poststart`: after the user process started; failures are warnings.
    Poststart,
    /// `poststop`: after the container was deleted; failures are warnings.
    Poststop,
}

impl HookKind {
    /// All kinds, in lifecycle order.
    pub const ALL: [HookKind; 6] = [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
        HookKind::Poststart,
        HookKind::Poststop,
    ];

    /// The name used in `config.json` (e.g. `"createRuntime"`).
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `hooks` one after the other, feeding each `state_json` on stdin;
/// a hook without `env` inherits the runtime's environment.
///
/// Stops at the first failure and returns it; the remaining hooks are not
/// run.
pub fn run_hooks(kind: HookKind, hooks: &[Hook], state_json: &[u8]) -> Result<(), Error> {
    for hook in hooks {
        run::run_hook(kind, hook, state_json, None)?;
    }
    Ok(())
}

/// Like [`run_hooks`], but a hook without `env` gets `absent_env` (the
/// container process's environment, for hooks run in the container).
pub fn run_hooks_with_env(
    kind: HookKind,
    hooks: &[Hook],
    state_json: &[u8],
    absent_env: &[String],
) -> Result<(), Error> {
    for hook in hooks {
        run::run_hook(kind, hook, state_json, Some(absent_env))?;
    }
    Ok(())
}

/// Like [`run_hooks`], but a failing hook is logged as a warning and the
/// remaining hooks still run — what the runtime spec requires for
/// `poststart` and `poststop`.
pub fn run_hooks_best_effort(kind: HookKind, hooks: &[Hook], state_json: &[u8]) {
    for hook in hooks {
        if let Err(err) = run::run_hook(kind, hook, state_json, None) {
            tracing::warn!(hook = %kind, path = %hook.path().display(), "{err}");
        }
    }
}

/// The hooks of `kind` in a spec's `hooks` section (empty if the section or
/// the list is absent).
pub fn hooks_of(hooks: Option<&Hooks>, kind: HookKind) -> &[Hook] {
    let Some(hooks) = hooks else {
        return &[];
    };
    #[allow(deprecated)] // prestart is deprecated but still part of the spec
    let list = match kind {
        HookKind::Prestart => hooks.prestart(),
        HookKind::CreateRuntime => hooks.create_runtime(),
        HookKind::CreateContainer => hooks.create_container(),
        HookKind::StartContainer => hooks.start_container(),
        HookKind::Poststart => hooks.poststart(),
        HookKind::Poststop => hooks.poststop(),
    };
    list.as_deref().unwrap_or(&[])
}

#[cfg(test)]
mod tests;
