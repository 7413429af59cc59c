//! `berth-logger`: writes one container's stdout and stderr to a json-file
//! log, as docker's json-file driver does.
//!
//! A shim starts it through containerd's `binary://` stdio contract: the
//! container's stdout on fd 3, its stderr on fd 4, a readiness pipe on fd 5
//! (closed once the log is open), and the URI's query as `key value`
//! arguments (`path`, `max-size`, `max-file`; see `berthd::logs::uri`). It
//! exits when both streams have ended. It is the shim's child, not
//! berthd's, so logs keep being written while berthd restarts. One runs per
//! container: it keeps two small buffers and two threads, nothing else.
#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::RawFd;
use std::process::ExitCode;

use berthd::logs::{logger, LoggerConfig};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

const STDOUT_FD: RawFd = 3;
const STDERR_FD: RawFd = 4;
const READY_FD: RawFd = 5;

fn main() -> ExitCode {
    let result = LoggerConfig::from_args(std::env::args_os().skip(1)).and_then(|config| {
        let stdout = inherited_pipe(STDOUT_FD)?;
        let stderr = inherited_pipe(STDERR_FD)?;
        logger::run(&config, stdout, stderr, || {
            // The shim reads the other end: end-of-file means ready.
            let _ = nix::unistd::close(READY_FD);
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth-logger: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the read end of a pipe inherited as `fd`. Without unsafe code an fd
/// number cannot become a `File`, so the pipe is opened anew through
/// `/proc/self/fd` (a second handle on the same pipe) and `fd` is closed.
/// The open does not wait for a writer (a pipe opened by path is a fifo);
/// the handle is made blocking again afterwards.
fn inherited_pipe(fd: RawFd) -> berthd::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{fd}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(&path)
        .map_err(|e| {
            berthd::Error::from(e).context(format!("opening the pipe on fd {fd} ({path})"))
        })?;
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| {
        berthd::Error::internal(format!("making the pipe on fd {fd} blocking: {e}"))
    })?;
    let _ = nix::unistd::close(fd);
    Ok(file)
}
