//! The shim is a child subreaper: container processes (whose runtime parent
//! exits after `create`/`exec --detach`) are reparented to it. One task reaps
//! every child on SIGCHLD and hands each exit to whoever waits for that pid.
//!
//! An exit nobody waits for yet is kept (bounded), stamped with when it was
//! reaped: a process can die before the shim learns its pid from the
//! runtime's pid file, and its status must still be reported. Waiters say
//! since when they care, so an old exit of a recycled pid is never taken for
//! a new process's.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// Exit code, or 128 + signal number when killed (as shells report it).
    pub status: u32,
    pub at: SystemTime,
}

/// Exits kept for pids nobody claimed (orphans of containers without a pid
/// namespace, processes that died before their pid was known).
const MAX_UNCLAIMED: usize = 1024;

struct Unclaimed {
    exit: Exit,
    reaped: Instant,
}

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, Vec<(Instant, oneshot::Sender<Exit>)>>,
    unclaimed: HashMap<i32, Unclaimed>,
    order: VecDeque<i32>,
}

#[derive(Clone)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

impl Reaper {
    /// Install the SIGCHLD handler and start reaping. Must run inside the
    /// tokio runtime, before any child is spawned.
    pub fn start() -> std::io::Result<Reaper> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            table: Arc::new(Mutex::new(Table::default())),
        };
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// The exit of `pid`, which started no earlier than `since`.
    pub fn subscribe(&self, pid: i32, since: Instant) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut table = lock(&self.table);
        if let Some(kept) = table.unclaimed.remove(&pid) {
            table.order.retain(|p| *p != pid);
            if kept.reaped >= since {
                let _ = tx.send(kept.exit);
                return rx;
            }
        }
        table.waiters.entry(pid).or_default().push((since, tx));
        rx
    }

    fn reap_all(&self) {
        loop {
            let exit = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => Exit {
                    pid: pid.as_raw(),
                    status: code as u32,
                    at: SystemTime::now(),
                },
                Ok(WaitStatus::Signaled(pid, sig, _)) => Exit {
                    pid: pid.as_raw(),
                    status: 128 + sig as u32,
                    at: SystemTime::now(),
                },
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            self.deliver(exit);
        }
    }

    fn deliver(&self, exit: Exit) {
        let mut table = lock(&self.table);
        if let Some(waiters) = table.waiters.remove(&exit.pid) {
            for (_, tx) in waiters {
                let _ = tx.send(exit);
            }
            return;
        }
        table.unclaimed.insert(
            exit.pid,
            Unclaimed {
                exit,
                reaped: Instant::now(),
            },
        );
        table.order.push_back(exit.pid);
        while table.order.len() > MAX_UNCLAIMED {
            if let Some(old) = table.order.pop_front() {
                table.unclaimed.remove(&old);
            }
        }
    }
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    // A panic while holding the lock cannot leave the table inconsistent
    // (every update is a single insert/remove), so keep going.
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_before_subscribe_is_kept_and_stale_ones_are_ignored() {
        let reaper = Reaper {
            table: Arc::new(Mutex::new(Table::default())),
        };
        let before = Instant::now();
        reaper.deliver(Exit {
            pid: 42,
            status: 3,
            at: SystemTime::now(),
        });
        let mut rx = reaper.subscribe(42, before);
        assert_eq!(rx.try_recv().unwrap().status, 3);

        reaper.deliver(Exit {
            pid: 43,
            status: 1,
            at: SystemTime::now(),
        });
        // A waiter for a process started after that exit must not get it.
        let mut rx = reaper.subscribe(43, Instant::now());
        assert!(rx.try_recv().is_err());
        reaper.deliver(Exit {
            pid: 43,
            status: 0,
            at: SystemTime::now(),
        });
        assert_eq!(rx.try_recv().unwrap().status, 0);
    }

    #[test]
    fn unclaimed_exits_are_bounded() {
        let reaper = Reaper {
            table: Arc::new(Mutex::new(Table::default())),
        };
        for pid in 0..(MAX_UNCLAIMED as i32 + 10) {
            reaper.deliver(Exit {
                pid,
                status: 0,
                at: SystemTime::now(),
            });
        }
        let table = lock(&reaper.table);
        assert_eq!(table.unclaimed.len(), MAX_UNCLAIMED);
        assert!(!table.unclaimed.contains_key(&0));
    }
}
