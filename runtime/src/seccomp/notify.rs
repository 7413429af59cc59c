//! Handing a filter's user-notification listener to the seccomp agent
//! (`SCMP_ACT_NOTIFY`, `linux.seccomp.listenerPath`).
//!
//! The design, in short:
//! - the parent (`berth create`/`run`, or `berth exec`) connects to
//!   `listenerPath` *before* cloning the process ([`Agent::connect`]), as it
//!   does for the console socket: the path is a host path the container's
//!   mount namespace may not show, and a missing agent fails `create` (or
//!   `exec`) before anything is started;
//! - the cloned process inherits the connected socket. Before installing
//!   the filter it serialises the message ([`Agent::prepare`]), then the
//!   process that installed the filter sends, right after seccomp(2), one
//!   message on that socket ([`Handoff::send`]): the OCI
//!   `ContainerProcessState` JSON (`fds: ["seccompFd"]`, its host `pid`,
//!   `metadata` = `listenerMetadata`, `state` = the container's OCI state)
//!   with the listener fd as SCM_RIGHTS, then closes both, before anything
//!   else it does may hit a notified syscall;
//! - the host pid comes from the parent: init's is in the state JSON it is
//!   handed with `HooksDone`; an exec'd process is told its own in
//!   `FromParent::HostPid`.
//!
//! For a container that is created but not started yet, the connection to
//! the agent stays open (unused) until `start`: the filter is installed,
//! and the listener sent, only once the container is started.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use serde::Serialize;

use super::Filter;
use crate::error::{Error, Result};

/// Name of the listener in `ContainerProcessState.fds`
/// (runtime-spec `SeccompFdName`).
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// A connection to the agent at `listenerPath`, made by the parent.
#[derive(Debug)]
pub struct Agent {
    socket: UnixStream,
    metadata: String,
}

/// runtime-spec `ContainerProcessState`: what the agent receives.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerProcessState<'a> {
    oci_version: &'a str,
    fds: [&'a str; 1],
    pid: i32,
    metadata: &'a str,
    state: serde_json::Value,
}

impl Agent {
    /// Connect to the agent if `filter` has `SCMP_ACT_NOTIFY` rules.
    pub fn connect(filter: Option<&Filter>) -> Result<Option<Agent>> {
        let Some(listener) = filter.and_then(Filter::listener) else {
            return Ok(None);
        };
        let socket = UnixStream::connect(&listener.path).map_err(|e| {
            Error::precondition(format!(
                "linux.seccomp.listenerPath: failed to connect with seccomp agent at {}: {e}",
                listener.path.display()
            ))
        })?;
        Ok(Some(Agent {
            socket,
            metadata: listener.metadata.clone(),
        }))
    }

    /// Build the message for the process with host pid `pid` (`None`: the
    /// container's init, the state's `pid`) in the container whose OCI
    /// state (JSON) is `state`. Done before the filter goes in, so that
    /// only sendmsg and close run between the two.
    pub fn prepare(self, pid: Option<i32>, state: &str) -> Result<Handoff> {
        let state: serde_json::Value = serde_json::from_str(state)
            .map_err(|e| Error::internal(format!("the container's state: {e}")))?;
        let pid = pid
            .or_else(|| state["pid"].as_i64().and_then(|p| i32::try_from(p).ok()))
            .ok_or_else(|| Error::internal("the container's state has no pid"))?;
        let message = serde_json::to_vec(&ContainerProcessState {
            oci_version: crate::default_spec::OCI_VERSION,
            fds: [SECCOMP_FD_NAME],
            pid,
            metadata: &self.metadata,
            state,
        })
        .map_err(|e| Error::internal(format!("the seccomp agent's message: {e}")))?;
        Ok(Handoff {
            socket: self.socket,
            message,
        })
    }
}

/// The prepared message, on the connected socket.
#[derive(Debug)]
pub struct Handoff {
    socket: UnixStream,
    message: Vec<u8>,
}

impl Handoff {
    /// Send the message with `listener`, then close both.
    pub fn send(self, listener: OwnedFd) -> Result<()> {
        loop {
            match crate::sys::send_with_fd(self.socket.as_fd(), &self.message, listener.as_fd()) {
                Err(Errno::EINTR) => continue,
                Ok(()) => return Ok(()),
                Err(e) => {
                    return Err(Error::internal(format!(
                        "sending the seccomp listener to the agent: {e}"
                    )))
                }
            }
        }
    }
}
