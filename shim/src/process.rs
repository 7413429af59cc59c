//! One process of a container (its init, or an exec) as the shim tracks it:
//! status, pid, exit, stdio relays.

use crate::error::Result;
use crate::reaper::Exit;
use crate::stdio::{Io, StdioPaths};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_proto(self) -> containerd_shim_protos::api::Status {
        use containerd_shim_protos::api::Status as P;
        match self {
            Status::Created => P::CREATED,
            Status::Running => P::RUNNING,
            Status::Paused => P::PAUSED,
            Status::Stopped => P::STOPPED,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    pid: i32,
    status: Status,
    exit: Option<Exit>,
}

pub struct Process {
    /// Empty for the container's init process.
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// The exec's OCI process (JSON), kept from Exec until Start.
    pub spec: Option<Vec<u8>>,
    state: Mutex<State>,
    exited: watch::Sender<Option<Exit>>,
    /// Held while a lifecycle step runs and publishes its event, and by the
    /// exit handler before it publishes the exit: so containerd always sees
    /// create/start before exit, even for a process that dies at once.
    pub lifecycle: tokio::sync::Mutex<()>,
    io: tokio::sync::Mutex<Option<Io>>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths, spec: Option<Vec<u8>>) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            stdio,
            spec,
            state: Mutex::new(State {
                pid: 0,
                status: Status::Created,
                exit: None,
            }),
            exited: watch::channel(None).0,
            lifecycle: tokio::sync::Mutex::new(()),
            io: tokio::sync::Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pid(&self) -> i32 {
        self.state().pid
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    pub fn exit(&self) -> Option<Exit> {
        self.state().exit
    }

    pub fn set_pid(&self, pid: i32) {
        self.state().pid = pid;
    }

    /// Created/Paused -> Running, unless it already exited.
    pub fn set_running(&self) {
        let mut state = self.state();
        if state.status != Status::Stopped {
            state.status = Status::Running;
        }
    }

    pub fn set_paused(&self, paused: bool) {
        let mut state = self.state();
        if state.status == Status::Stopped {
            return;
        }
        state.status = if paused {
            Status::Paused
        } else {
            Status::Running
        };
    }

    pub fn set_exited(&self, exit: Exit) {
        {
            let mut state = self.state();
            state.status = Status::Stopped;
            state.exit = Some(exit);
        }
        self.exited.send_replace(Some(exit));
    }

    /// Wait for the exit (immediately if it already happened).
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Wait for the exit at most `limit`.
    pub async fn wait_for(&self, limit: Duration) -> Option<Exit> {
        tokio::time::timeout(limit, self.wait()).await.ok()
    }

    pub async fn set_io(&self, io: Io) {
        *self.io.lock().await = Some(io);
    }

    pub async fn close_stdin(&self) {
        if let Some(io) = self.io.lock().await.as_ref() {
            io.close_stdin();
        }
    }

    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        match self.io.lock().await.as_ref() {
            Some(io) => io.resize(width, height),
            None => Err(crate::error::Error::precondition(
                "the process has no terminal to resize",
            )),
        }
    }

    /// Let the output drain (at most `limit`) and stop the relays.
    pub async fn finish_io(&self, limit: Duration) {
        let io = self.io.lock().await.take();
        if let Some(mut io) = io {
            io.finish(limit).await;
        }
    }
}
