//! The sync channel between `berth create` (the parent) and the container's
//! init process (the child): a SOCK_SEQPACKET socketpair carrying one
//! JSON-encoded message per packet, so message boundaries are kept and an
//! exited peer shows up as end-of-file instead of a hang.
//!
//! The conversation, in order:
//! 0. (new user namespace only) parent -> child `UsersMapped`: uid_map and
//!    gid_map are written; an id-mapped rootfs tree may come along (fd);
//! 1. parent -> child `CgroupJoined` (only when the child was not born in
//!    its cgroup): the parent wrote the child's pid into its cgroup. The
//!    child sets up its rootfs meanwhile and takes this message before it
//!    unshares the cgroup namespace, before hooks, and before `Ready`;
//! 2. (only when there are prestart/createRuntime/createContainer/
//!    startContainer hooks or a seccomp agent) child -> parent
//!    `RunCreateRuntimeHooks`: mounts are done, before pivot_root; the
//!    parent runs prestart and createRuntime hooks;
//! 3. parent -> child `HooksDone` (with the state JSON hooks read); the
//!    child runs createContainer hooks, pivots and finishes its setup;
//! 4. child -> parent `Ready`: init is waiting to be started;
//! 5. (`run` only) parent -> child `Start`, child -> parent `Started` once
//!    its startContainer hooks ran; after `create`, `start` opens the exec
//!    fifo instead, and init writes to it once those hooks ran.
//!
//! At any point the child may send `Failed` with the stage it was in, the
//! errno and a message; the parent turns it into a typed error.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Messages from the container's init to the parent.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum FromChild {
    RunCreateRuntimeHooks,
    Ready,
    /// (`run` only) startContainer hooks ran; init is about to exec.
    Started,
    Failed(InitFailure),
}

/// Messages from the parent to the container's init.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum FromParent {
    /// The new user namespace's id mappings are written; with
    /// `idmapped_rootfs`, an id-mapped rootfs mount tree comes along.
    UsersMapped {
        idmapped_rootfs: bool,
    },
    CgroupJoined,
    /// The createRuntime hooks ran; carries the state JSON for the
    /// container's own hooks (the child cannot see its host pid).
    HooksDone {
        state: String,
    },
    Start,
    /// (`exec` with a notifying seccomp filter) the exec'd process's pid
    /// as the host sees it, for the seccomp agent.
    HostPid {
        pid: i32,
    },
}

/// Why the container's init failed: sent across the fork as data, not text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InitFailure {
    /// What init was doing, e.g. "mounting proc on /proc".
    pub stage: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl std::fmt::Display for InitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage, self.message)
    }
}

/// The largest message accepted; a longer one is an error (EMSGSIZE),
/// never silently cut.
const MAX_MESSAGE: usize = 256 * 1024;

/// One end of the sync channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair (parent end, child end), both close-on-exec.
pub fn pair() -> nix::Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send<T: Serialize>(&self, message: &T) -> nix::Result<()> {
        let data = serde_json::to_vec(message).map_err(|_| Errno::EINVAL)?;
        loop {
            match nix::unistd::write(&self.fd, &data) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Send a message with a descriptor attached (SCM_RIGHTS).
    pub fn send_with_fd<T: Serialize>(&self, message: &T, fd: BorrowedFd<'_>) -> nix::Result<()> {
        let data = serde_json::to_vec(message).map_err(|_| Errno::EINVAL)?;
        crate::sys::send_with_fd(self.fd.as_fd(), &data, fd)
    }

    /// The next message and the descriptor sent with it, if any. (Only
    /// small messages travel with descriptors.)
    pub fn recv_with_fd<T: DeserializeOwned>(&self) -> nix::Result<Option<(T, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, fd) = loop {
            match crate::sys::recv_with_fd(self.fd.as_fd(), &mut buf) {
                Err(Errno::EINTR) => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&buf[..n]).map_err(|_| Errno::EPROTO)?;
        Ok(Some((message, fd)))
    }

    /// The next message, or `None` when the peer closed its end.
    pub fn recv<T: DeserializeOwned>(&self) -> nix::Result<Option<T>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut reset = false;
        let n = loop {
            // MSG_TRUNC: the packet's real length, to tell a cut message.
            match nix::sys::socket::recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::MSG_TRUNC,
            ) {
                Ok(n) if n > buf.len() => return Err(Errno::EMSGSIZE),
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                // The peer exited with a message of ours unread: the
                // kernel reports that once, before what the peer sent us
                // (e.g. its failure report). Keep reading.
                Err(Errno::ECONNRESET) if !reset => reset = true,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|_| Errno::EPROTO)
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (a, b) = pair().unwrap();
        a.send(&FromParent::CgroupJoined).unwrap();
        let failure = FromChild::Failed(InitFailure {
            stage: "mounting".into(),
            errno: Some(2),
            message: "no such file".into(),
        });
        b.send(&failure).unwrap();
        assert_eq!(
            b.recv::<FromParent>().unwrap(),
            Some(FromParent::CgroupJoined)
        );
        assert_eq!(a.recv::<FromChild>().unwrap(), Some(failure));
        drop(b);
        assert_eq!(a.recv::<FromChild>().unwrap(), None);
    }

    #[test]
    fn report_survives_a_peer_that_exits_with_unread_messages() {
        let (parent, child) = pair().unwrap();
        child.send(&FromChild::Ready).unwrap();
        parent.send(&FromParent::CgroupJoined).unwrap();
        drop(child); // exits without reading CgroupJoined
        assert_eq!(parent.recv::<FromChild>().unwrap(), Some(FromChild::Ready));
        assert_eq!(parent.recv::<FromChild>().unwrap(), None);
    }
}
