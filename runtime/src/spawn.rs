//! Cloning a container process and driving it over the sync channel: the
//! pattern `create` (the container's init) and `exec` (a process joining a
//! container) share.
//!
//! Parent side: [`spawn`] makes the channel, clones the child (into its new
//! namespaces, born in its cgroup where the kernel can), hands the child
//! its end and returns a [`Spawned`], which the command drives with
//! [`Spawned::join_cgroup`], [`Spawned::channel`] and [`Spawned::next`]
//! until it [`Spawned::disarm`]s it. Until then, dropping it (any error on
//! the way) kills and reaps the child, so a failed command leaves no
//! process behind:
//!
//! ```text
//! let child = spawn(clone, |end| init::run(args(end)))?;  // kill on drop
//! child.join_cgroup(cgroup)?;              // v1 / no CLONE_INTO_CGROUP
//! while let Some(m) = child.next()? { .. } // `Failed` and a death are errors
//! let (pid, channel) = child.disarm();     // complete: the child stays
//! ```
//!
//! Child side: [`wait_for`] takes the one message a stage waits for, and
//! [`failed_at`] turns an error into the [`InitFailure`] the child reports
//! before it exits; the parent's [`Spawned::next`] rebuilds an error of it.

use std::os::fd::BorrowedFd;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
use nix::unistd::Pid;

use crate::cgroups::CgroupManager;
use crate::channel::{self, Channel, FromChild, FromParent, InitFailure};
use crate::error::{Context, Error, Result};
use crate::sys;

/// Which process is spawned, for the words of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The container's init (`create`, `run`).
    Init,
    /// A process joining a running container (`exec`).
    Exec,
}

impl Role {
    fn cloning(self) -> &'static str {
        match self {
            Role::Init => "cloning the container's init",
            Role::Exec => "forking the process to exec",
        }
    }

    fn talking(self) -> &'static str {
        match self {
            Role::Init => "talking to the container's init",
            Role::Exec => "talking to the exec'd process",
        }
    }

    fn failed(self, failure: &InitFailure) -> Error {
        match self {
            Role::Init => Error::internal(format!("container init failed: {failure}")),
            Role::Exec => Error::internal(format!("exec failed: {failure}")),
        }
    }
}

/// How to clone the child.
#[derive(Debug)]
pub struct CloneArgs<'a> {
    pub role: Role,
    /// `CLONE_NEW*` flags (none for exec, which joins namespaces instead).
    pub flags: libc::c_int,
    /// The cgroup to be born in (v2: `CLONE_INTO_CGROUP`), if any.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// Make the runtime (and with it the child) non-dumpable before the
    /// clone, so nothing in the container reaches the host binary through
    /// /proc/PID/exe or ptrace. (Not when an unprivileged parent must
    /// still write the child's uid_map: the child does it once mapped.)
    pub non_dumpable: bool,
}

/// What the child is given: its end of the channel, and whether clone put
/// it in its cgroup already.
#[derive(Debug)]
pub struct ChildEnd {
    pub channel: Channel,
    pub born_in_cgroup: bool,
}

/// A cloned child the parent drives; killed and reaped on drop unless
/// disarmed.
#[derive(Debug)]
pub struct Spawned {
    role: Role,
    born_in_cgroup: bool,
    channel: Channel,
    guard: KillOnDrop,
}

/// Kills and reaps `pid` when dropped armed.
#[derive(Debug)]
struct KillOnDrop {
    pid: Pid,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// Clone the child described by `clone`; in the child, `child` runs with
/// its end of the channel and execs or exits (it never returns here). In the parent, `child` (and
/// everything it captured for the child) is dropped right after the clone.
pub fn spawn<F>(clone: CloneArgs<'_>, child: F) -> Result<Spawned>
where
    F: FnOnce(ChildEnd),
{
    let (parent_end, child_end) = channel::pair().context("creating the sync channel")?;
    if clone.non_dumpable {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    let (fork, born_in_cgroup) =
        sys::clone_fork(clone.flags, clone.cgroup).context(clone.role.cloning())?;
    match fork {
        sys::CloneResult::Child => {
            drop(parent_end);
            child(ChildEnd {
                channel: child_end,
                born_in_cgroup,
            });
            // `child` execs or exits; a child that came back must still
            // never run the parent's code.
            sys::exit_now(127)
        }
        sys::CloneResult::Parent(pid) => {
            drop(child_end);
            drop(child);
            Ok(Spawned {
                role: clone.role,
                born_in_cgroup,
                channel: parent_end,
                guard: KillOnDrop { pid, armed: true },
            })
        }
    }
}

impl Spawned {
    pub fn pid(&self) -> Pid {
        self.guard.pid
    }

    /// Whether clone put the child in its cgroup (CLONE_INTO_CGROUP).
    pub fn born_in_cgroup(&self) -> bool {
        self.born_in_cgroup
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Send `message`; failing to is an error naming the child.
    pub fn send(&self, message: &FromParent) -> Result<()> {
        self.channel.send(message).context(self.role.talking())
    }

    /// Unless the child is in its cgroup already (born there, and, on a
    /// v1 or hybrid host, `child_joins_v1`: it joined the v1 hierarchies
    /// itself), write its pid where it is missing and tell it
    /// (`CgroupJoined`). If the child already failed, its report is what
    /// matters and is read by [`Self::next`]: a failed send is no error
    /// here.
    pub fn join_cgroup(&self, cgroup: &dyn CgroupManager, child_joins_v1: bool) -> Result<()> {
        let state = cgroup.state();
        if !crate::cgroups::complete_at_birth(&state, self.born_in_cgroup, child_joins_v1) {
            cgroup.add_task_after_clone(
                self.pid().as_raw(),
                self.born_in_cgroup,
                child_joins_v1,
            )?;
            let _ = self.channel.send(&FromParent::CgroupJoined);
        }
        Ok(())
    }

    /// The child's next message; `None` once it closed its end (it exec'd,
    /// the channel being close-on-exec, or died: see [`Self::died`]). Its
    /// `Failed` report is returned as the error it describes.
    pub fn next(&self) -> Result<Option<FromChild>> {
        match self
            .channel
            .recv::<FromChild>()
            .context(self.role.talking())?
        {
            Some(FromChild::Failed(failure)) => Err(self.role.failed(&failure)),
            other => Ok(other),
        }
    }

    /// The error for a child that closed the channel before it was done.
    pub fn died(&self) -> Error {
        match self.role {
            Role::Init => {
                // Peek only: the drop reaps it, and must not kill a pid
                // that was already reaped (and maybe reused).
                let status = waitid(
                    Id::Pid(self.pid()),
                    WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
                )
                .map(|s| format!("{s:?}"))
                .unwrap_or_default();
                Error::internal(format!("container init exited during setup ({status})"))
            }
            Role::Exec => Error::internal("the exec'd process died during setup"),
        }
    }

    /// The child is complete: it is no longer killed on drop. Returns its
    /// pid and the parent's end of the channel.
    pub fn disarm(mut self) -> (Pid, Channel) {
        self.guard.armed = false;
        (self.guard.pid, self.channel)
    }
}

/// A failure at a named stage, for the child to report.
pub fn failed_at(stage: &str) -> impl Fn(Error) -> InitFailure + '_ {
    move |e| InitFailure {
        stage: stage.to_string(),
        errno: None,
        message: e.to_string(),
    }
}

/// (Child) the next message from the parent, at `stage`; the parent going
/// away is a failure.
pub fn receive(channel: &Channel, stage: &str) -> std::result::Result<FromParent, InitFailure> {
    match channel.recv::<FromParent>() {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(InitFailure {
            stage: stage.into(),
            errno: None,
            message: "the runtime went away".into(),
        }),
        Err(e) => Err(InitFailure {
            stage: stage.into(),
            errno: Some(e as i32),
            message: e.to_string(),
        }),
    }
}

/// (Child) wait at `stage` for the one message `pick` accepts; any other
/// is a failure.
pub fn wait_for<T>(
    channel: &Channel,
    stage: &str,
    pick: impl FnOnce(FromParent) -> std::result::Result<T, FromParent>,
) -> std::result::Result<T, InitFailure> {
    pick(receive(channel, stage)?)
        .map_err(|other| failed_at(stage)(Error::internal(format!("unexpected {other:?}"))))
}

/// (Child) wait until the parent has put us in our cgroup.
pub fn wait_for_cgroup(channel: &Channel) -> std::result::Result<(), InitFailure> {
    wait_for(channel, "waiting for the cgroup", |m| match m {
        FromParent::CgroupJoined => Ok(()),
        other => Err(other),
    })
}
