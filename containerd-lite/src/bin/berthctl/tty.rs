//! berthctl's own terminal during `run -t`: raw mode while the session
//! lasts, and its size for the task's pty.

use std::os::fd::{AsFd, OwnedFd};

use rustix::termios::{self, OptionalActions, Termios};

/// The terminal on stdin in raw mode; the saved mode comes back on drop.
pub(crate) struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on stdin in raw mode: keys (Ctrl-C included) go
    /// to the container as bytes, nothing is echoed locally. Fails when
    /// stdin is not a terminal.
    pub(crate) fn enable() -> Result<RawMode, String> {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stdin: {e}"))?;
        let saved =
            termios::tcgetattr(&fd).map_err(|e| format!("-t needs a terminal on stdin: {e}"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&fd, OptionalActions::Now, &raw)
            .map_err(|e| format!("setting the terminal to raw mode: {e}"))?;
        Ok(RawMode { fd, saved })
    }

    /// The terminal's size as (columns, rows), if it has one.
    pub(crate) fn size(&self) -> Option<(u32, u32)> {
        let size = termios::tcgetwinsize(&self.fd).ok()?;
        (size.ws_col > 0 && size.ws_row > 0).then(|| (size.ws_col.into(), size.ws_row.into()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
    }
}
