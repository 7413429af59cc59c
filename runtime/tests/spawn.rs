//! The clone-and-drive pattern of `berth_runtime::spawn`, with real
//! children: a failure report becomes the parent's error, a child that
//! dies during setup is an error naming it, an error on the way kills and
//! reaps the child, and a disarmed child is left alone.
//!
//! One test function on purpose: the children are forked from this
//! process, which must have no other test thread running meanwhile.

#![allow(clippy::unwrap_used)]

use berth_runtime::channel::{FromChild, FromParent, InitFailure};
use berth_runtime::spawn::{self, CloneArgs, Role, Spawned};
use nix::sys::wait::{waitpid, WaitStatus};

fn clone(role: Role) -> CloneArgs<'static> {
    CloneArgs {
        role,
        flags: 0,
        cgroup: None,
        // Keep this test process dumpable.
        non_dumpable: false,
    }
}

/// Whether `pid` is gone, reaped (not even a zombie of ours).
fn reaped(pid: nix::unistd::Pid) -> bool {
    matches!(
        waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
        Err(nix::errno::Errno::ECHILD)
    )
}

fn spawn_with(role: Role, body: fn(&spawn::ChildEnd)) -> Spawned {
    spawn::spawn(clone(role), move |end| {
        body(&end);
        berth_runtime::sys::exit_now(0)
    })
    .unwrap()
}

#[test]
fn spawned_children_are_driven_reported_and_cleaned_up() {
    // A failure report is the parent's error, with the role's words.
    let child = spawn_with(Role::Init, |end| {
        let failure = spawn::wait_for_cgroup(&end.channel)
            .err()
            .unwrap_or(InitFailure {
                stage: "mounting proc".into(),
                errno: Some(2),
                message: "no such file".into(),
            });
        let _ = end.channel.send(&FromChild::Failed(failure));
    });
    assert!(!child.born_in_cgroup());
    child.send(&FromParent::CgroupJoined).unwrap();
    let e = child.next().unwrap_err();
    assert_eq!(
        e.to_string(),
        "container init failed: mounting proc: no such file"
    );
    let pid = child.pid();
    drop(child);
    assert!(reaped(pid), "a dropped child must be reaped");

    // Waiting for one message and getting another is the child's failure.
    let child = spawn_with(Role::Exec, |end| {
        if let Err(failure) = spawn::wait_for_cgroup(&end.channel) {
            let _ = end.channel.send(&FromChild::Failed(failure));
        }
    });
    child.send(&FromParent::Start).unwrap();
    let e = child.next().unwrap_err().to_string();
    assert!(
        e.starts_with("exec failed: waiting for the cgroup: unexpected Start"),
        "{e}"
    );
    drop(child);

    // A child that exits without a word: end-of-file, then `died`.
    let child = spawn_with(Role::Init, |_| {});
    assert!(child.next().unwrap().is_none());
    let e = child.died().to_string();
    assert!(e.starts_with("container init exited during setup"), "{e}");
    let pid = child.pid();
    drop(child);
    assert!(reaped(pid));

    // A child still at work when the parent gives up is killed.
    let child = spawn_with(Role::Exec, |end| {
        let _ = end.channel.send(&FromChild::Ready);
        // Blocks until the parent goes away (or the kill).
        let _ = spawn::receive(&end.channel, "waiting");
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    assert_eq!(child.next().unwrap(), Some(FromChild::Ready));
    let pid = child.pid();
    let started = std::time::Instant::now();
    drop(child);
    assert!(reaped(pid));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // Disarmed, the child is the caller's: it is not killed.
    let child = spawn_with(Role::Init, |end| {
        let _ = end.channel.send(&FromChild::Ready);
        let _ = spawn::receive(&end.channel, "waiting for Start");
    });
    assert_eq!(child.next().unwrap(), Some(FromChild::Ready));
    let (pid, channel) = child.disarm();
    channel.send(&FromParent::Start).unwrap();
    assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
}
