//! CRIU, the checkpoint/restore tool, driven through its RPC service: berth
//! starts `criu swrk FD` with one end of a SOCK_SEQPACKET socketpair,
//! sends one request and answers CRIU's notifications (the points where
//! the runtime must act: hooks, the restored pid, a terminal) until the
//! final response. This is how runc drives CRIU, so checkpoints made by
//! either can be restored by the other.
//!
//! Descriptors named in a request's options (the image and work
//! directories) are read by CRIU from our /proc/PID/fd, so they only have
//! to stay open during the call; the ones in `inherit_fd` must be in
//! CRIU's own table and are passed with [`Call::inherit`].

pub mod rpc;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use prost::Message;

use crate::error::{Context, Error, Result};

/// The oldest CRIU berth drives: 3.15 is the first to announce a lazy page
/// server through a notification, and it handles cgroup v2 freezing and
/// external pid and network namespaces.
pub const MIN_VERSION: u32 = 31500;

/// A CRIU binary.
#[derive(Debug, Clone)]
pub struct Criu {
    path: PathBuf,
}

/// A notification CRIU sent during a call: the name of the "action
/// script" point it reached, the pid it concerns, and a descriptor that
/// came with it (the pty master of `orphan-pts-master`).
#[derive(Debug)]
pub struct Notification {
    pub script: String,
    pub pid: Option<i32>,
    pub fd: Option<OwnedFd>,
}

/// One request to CRIU and what it needs besides the message.
pub struct Call<'a> {
    pub request: rpc::Req,
    /// Descriptors CRIU must hold at the same numbers (`inherit_fd`).
    pub inherit: Vec<BorrowedFd<'a>>,
    /// Whether CRIU gets our stdin, stdout and stderr (a restore hands
    /// them to the restored process) or /dev/null.
    pub stdio: bool,
    /// Where CRIU writes its log, for error messages.
    pub log: Option<PathBuf>,
    /// Called with CRIU's pid once it runs, before the request is sent
    /// (to move CRIU into a cgroup and complete the request).
    pub on_start: Option<OnStart<'a>>,
}

/// See [`Call::on_start`].
pub type OnStart<'a> = Box<dyn FnOnce(i32, &mut rpc::Req) -> Result<()> + 'a>;

impl<'a> Call<'a> {
    /// A request that needs nothing but itself (version, feature check).
    pub fn plain(request: rpc::Req) -> Self {
        Self {
            request,
            inherit: Vec::new(),
            stdio: false,
            log: None,
            on_start: None,
        }
    }
}

impl Criu {
    /// The CRIU at `path`, or `criu` from PATH.
    pub fn new(path: Option<&Path>) -> Self {
        Self {
            path: path.map_or_else(|| PathBuf::from("criu"), Path::to_path_buf),
        }
    }

    /// CRIU's version as major*10000 + minor*100 + sublevel.
    pub fn version(&self) -> Result<u32> {
        let request = rpc::Req {
            r#type: rpc::ReqType::Version as i32,
            ..Default::default()
        };
        let resp = self.call(Call::plain(request), |_| Ok(()))?;
        let v = resp
            .version
            .ok_or_else(|| Error::internal("criu: its version reply has no version"))?;
        let part = |n: i32| u32::try_from(n).unwrap_or(0);
        Ok(part(v.major) * 10000 + part(v.minor) * 100 + part(v.sublevel.unwrap_or(0)))
    }

    /// Fail unless this CRIU is [`MIN_VERSION`] or newer.
    pub fn require_version(&self) -> Result<u32> {
        let version = self.version()?;
        if version < MIN_VERSION {
            return Err(Error::unsupported(format!(
                "criu {} is too old: berth needs criu {} or newer",
                format_version(version),
                format_version(MIN_VERSION)
            )));
        }
        Ok(version)
    }

    /// Fail unless CRIU and this kernel can track memory changes
    /// (soft-dirty bits), which `option` needs.
    pub fn require_memory_tracking(&self, option: &str) -> Result<()> {
        let wanted = rpc::Features {
            mem_track: Some(true),
            ..Default::default()
        };
        if self.features(wanted)?.mem_track != Some(true) {
            return Err(Error::unsupported(format!(
                "{option}: criu or this kernel cannot track memory changes (soft-dirty bits)"
            )));
        }
        Ok(())
    }

    /// Fail unless CRIU and this kernel can restore memory lazily
    /// (userfaultfd), which `option` needs.
    pub fn require_lazy_pages(&self, option: &str) -> Result<()> {
        let wanted = rpc::Features {
            lazy_pages: Some(true),
            ..Default::default()
        };
        if self.features(wanted)?.lazy_pages != Some(true) {
            return Err(Error::unsupported(format!(
                "{option}: criu or this kernel cannot restore memory lazily (userfaultfd)"
            )));
        }
        Ok(())
    }

    /// Which of the features set in `wanted` CRIU and this kernel have.
    fn features(&self, wanted: rpc::Features) -> Result<rpc::Features> {
        let request = rpc::Req {
            r#type: rpc::ReqType::FeatureCheck as i32,
            features: Some(wanted),
            ..Default::default()
        };
        let resp = self.call(Call::plain(request), |_| Ok(()))?;
        Ok(resp.features.unwrap_or_default())
    }

    /// Run one request: start `criu swrk`, send it, answer notifications
    /// with `on_notify` (an error there makes CRIU abort) and return the
    /// final response once CRIU has exited.
    pub fn call(
        &self,
        mut call: Call<'_>,
        mut on_notify: impl FnMut(Notification) -> Result<()>,
    ) -> Result<rpc::Resp> {
        let kind = rpc::ReqType::name(call.request.r#type);
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("criu: creating the socketpair")?;
        let mut command = Command::new(&self.path);
        command.arg("swrk").arg(theirs.as_raw_fd().to_string());
        if !call.stdio {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let child = {
            // The child keeps these at their numbers: they lose
            // close-on-exec for the spawn only (berth is single-threaded,
            // so no other spawn can catch them meanwhile).
            let passed: Vec<BorrowedFd<'_>> = std::iter::once(theirs.as_fd())
                .chain(call.inherit.iter().copied())
                .collect();
            let _inheritable = Inheritable::new(&passed)?;
            command.spawn().map_err(|e| {
                Error::unsupported(format!(
                    "cannot run {}: {e} (is CRIU installed? --criu names another binary)",
                    self.path.display()
                ))
            })?
        };
        drop(theirs);
        let mut session = Session {
            sock: ours,
            child,
            waited: false,
        };
        if let Some(on_start) = call.on_start.take() {
            let pid = i32::try_from(session.child.id()).context("criu's pid")?;
            on_start(pid, &mut call.request)?;
        }
        let reply = session.converse(&call.request, &mut on_notify);
        let status = session.wait();
        let failed = |what: String| {
            let log = call
                .log
                .as_ref()
                .map(|l| format!(" (log: {})", l.display()))
                .unwrap_or_default();
            Error::internal(format!("criu {kind} failed: {what}{log}"))
        };
        let resp = reply.map_err(|e| failed(e.message().to_string()))?;
        if !resp.success {
            // CRIU's own message is its first error, often a harmless one
            // it went on from; the last ones in its log say what failed.
            let logged = call.log.as_deref().and_then(last_errors);
            let why = match (logged, &resp.cr_errmsg, resp.cr_errno) {
                (Some(errors), _, _) => errors,
                (None, Some(msg), _) if !msg.trim().is_empty() => msg.trim().to_string(),
                (None, _, Some(errno)) if errno != 0 => {
                    nix::errno::Errno::from_raw(errno).to_string()
                }
                _ => "no reason given".to_string(),
            };
            return Err(failed(why));
        }
        // CRIU stays in a loop after a pre-dump, waiting for more: it is
        // stopped by our closing the socket, which is no failure.
        if call.request.r#type != rpc::ReqType::PreDump as i32 {
            if let Some(status) = status.filter(|s| !s.success()) {
                return Err(failed(format!("criu exited with {status}")));
            }
        }
        Ok(resp)
    }
}

/// The last error lines of a CRIU log, without their timestamps.
fn last_errors(log: &Path) -> Option<String> {
    const SHOWN: usize = 3;
    let text = std::fs::read_to_string(log).ok()?;
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error ("))
        .map(|l| match l.split_once(") ") {
            Some((stamp, rest)) if stamp.starts_with('(') => rest,
            _ => l,
        })
        .collect();
    let start = errors.len().saturating_sub(SHOWN);
    (!errors.is_empty()).then(|| errors[start..].join("; "))
}

/// `30500` as `3.5.0`.
pub fn format_version(v: u32) -> String {
    format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
}

/// A running `criu swrk`.
struct Session {
    sock: OwnedFd,
    child: std::process::Child,
    waited: bool,
}

/// The largest message CRIU sends (runc reads into the same size).
const MAX_MESSAGE: usize = 10 * 4096;

impl Session {
    fn send(&self, req: &rpc::Req) -> Result<()> {
        nix::sys::socket::send(
            self.sock.as_raw_fd(),
            &req.encode_to_vec(),
            nix::sys::socket::MsgFlags::empty(),
        )
        .context("sending the request")
        .map(drop)
    }

    fn converse(
        &mut self,
        req: &rpc::Req,
        on_notify: &mut impl FnMut(Notification) -> Result<()>,
    ) -> Result<rpc::Resp> {
        self.send(req)?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, fd) = crate::sys::recv_with_fd(self.sock.as_fd(), &mut buf)
                .context("reading criu's reply")?;
            if n == 0 {
                return Err(Error::internal("criu exited without replying"));
            }
            if n == buf.len() {
                return Err(Error::internal("criu's reply is too large"));
            }
            let resp = rpc::Resp::decode(&buf[..n]).context("decoding criu's reply")?;
            if resp.r#type != rpc::ReqType::Notify as i32 || !resp.success {
                return Ok(resp);
            }
            let notify = resp.notify.unwrap_or_default();
            let note = Notification {
                script: notify.script.unwrap_or_default(),
                pid: notify.pid,
                fd,
            };
            let script = note.script.clone();
            let handled = on_notify(note);
            self.send(&rpc::Req {
                r#type: rpc::ReqType::Notify as i32,
                notify_success: Some(handled.is_ok()),
                ..Default::default()
            })?;
            handled.map_err(|e| e.context(format!("at criu's {script:?} notification")))?;
        }
    }

    /// Close our end and wait for CRIU; its status, when it could be read.
    fn wait(&mut self) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        self.waited = true;
        self.child.wait().ok()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Descriptors made inheritable across exec until dropped.
struct Inheritable<'a> {
    fds: Vec<BorrowedFd<'a>>,
}

impl<'a> Inheritable<'a> {
    fn new(fds: &[BorrowedFd<'a>]) -> Result<Self> {
        let mut done = Self { fds: Vec::new() };
        for fd in fds {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .context("passing a descriptor to criu")?;
            done.fds.push(*fd);
        }
        Ok(done)
    }
}

impl Drop for Inheritable<'_> {
    fn drop(&mut self) {
        for fd in &self.fds {
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn failures_quote_the_last_errors_of_the_log() -> Result<(), std::io::Error> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("dump.log");
        std::fs::write(
            &log,
            "(00.01) Error (criu/util.c:1): first\n(00.02) fine\n(00.03) Error (a.c:2): x\n\
             (00.04) Error (b.c:3): y\n(00.05) Error (c.c:4): z\n",
        )?;
        assert_eq!(
            super::last_errors(&log).as_deref(),
            Some("Error (a.c:2): x; Error (b.c:3): y; Error (c.c:4): z")
        );
        assert_eq!(super::last_errors(&dir.path().join("none")), None);
        Ok(())
    }

    #[test]
    fn versions_read_as_criu_prints_them() {
        assert_eq!(super::format_version(31500), "3.15.0");
        assert_eq!(super::format_version(40101), "4.1.1");
    }
}
