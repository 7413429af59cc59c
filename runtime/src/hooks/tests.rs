//! Tests with real shell-script hooks.
//!
//! Most hooks are run as `/bin/sh SCRIPT ARGS...` rather than by executing
//! the freshly written script: in a multi-threaded test binary another
//! test's `fork` can briefly inherit the script's write descriptor, making
//! `execve` of the script fail with `ETXTBSY`. Direct execution is covered
//! by one test that retries on that error.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, HookBuilder, Hooks, HooksBuilder};
use tempfile::TempDir;

use super::*;

const STATE: &[u8] =
    br#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b"}"#;

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A hook running `script` with `/bin/sh`, passing `args` as `$1...`.
fn sh_hook(script: &Path, args: &[&str]) -> Hook {
    let mut argv = vec!["sh".to_string(), script.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    HookBuilder::default()
        .path("/bin/sh")
        .args(argv)
        .build()
        .expect("hook")
}

fn with_timeout(mut hook: Hook, secs: i64) -> Hook {
    hook.set_timeout(Some(secs));
    hook
}

fn with_env(mut hook: Hook, env: &[&str]) -> Hook {
    hook.set_env(Some(env.iter().map(|s| s.to_string()).collect()));
    hook
}

fn tmp() -> TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn kind_names() {
    let names: Vec<String> = HookKind::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    assert_eq!(
        HookKind::ALL.map(HookKind::name).to_vec(),
        crate::features::HOOKS
    );
}

#[test]
fn hooks_of_selects_kind() {
    let a = HookBuilder::default().path("/a").build().expect("hook");
    let b = HookBuilder::default().path("/b").build().expect("hook");
    let hooks: Hooks = HooksBuilder::default()
        .create_runtime(vec![a.clone(), b.clone()])
        .poststop(vec![b.clone()])
        .build()
        .expect("hooks");
    assert_eq!(
        hooks_of(Some(&hooks), HookKind::CreateRuntime),
        &[a, b.clone()]
    );
    assert_eq!(hooks_of(Some(&hooks), HookKind::Poststop), &[b]);
    assert!(hooks_of(Some(&hooks), HookKind::StartContainer).is_empty());
    assert!(hooks_of(Some(&hooks), HookKind::Prestart).is_empty());
    assert!(hooks_of(None, HookKind::CreateRuntime).is_empty());

    let parsed: Hooks =
        serde_json::from_str(r#"{"prestart":[{"path":"/p"}]}"#).expect("parse hooks");
    assert_eq!(hooks_of(Some(&parsed), HookKind::Prestart).len(), 1);
}

#[test]
fn runs_in_order() {
    let dir = tmp();
    let log = dir.path().join("log");
    let script = write_script(dir.path(), "append.sh", r#"echo "$1" >> "$2""#);
    let log_s = log.display().to_string();
    let hooks: Vec<Hook> = ["one", "two", "three"]
        .iter()
        .map(|n| sh_hook(&script, &[n, &log_s]))
        .collect();
    run_hooks(HookKind::CreateRuntime, &hooks, STATE).expect("hooks succeed");
    assert_eq!(fs::read_to_string(&log).expect("log"), "one\ntwo\nthree\n");
}

#[test]
fn hook_env_is_exactly_its_env_or_the_runtimes() {
    let dir = tmp();
    let out = dir.path().join("env");
    let script = write_script(dir.path(), "env.sh", r#"/usr/bin/env > "$1""#);
    let hook = sh_hook(&script, &[&out.display().to_string()]);

    run_hooks(
        HookKind::Prestart,
        &[with_env(hook.clone(), &["FOO=bar", "EMPTY=", "EQ=a=b"])],
        STATE,
    )
    .expect("hook succeeds");
    let mut vars: Vec<String> = fs::read_to_string(&out)
        .expect("env output")
        .lines()
        .filter(|l| !l.starts_with("PWD=")) // set by the shell itself
        .map(str::to_string)
        .collect();
    vars.sort();
    assert_eq!(vars, ["EMPTY=", "EQ=a=b", "FOO=bar"]);

    // No env at all: the runtime's own environment is passed on, as runc
    // and crun do (Docker's prestart hook has no env).
    run_hooks(HookKind::Prestart, std::slice::from_ref(&hook), STATE).expect("hook succeeds");
    let text = fs::read_to_string(&out).expect("env output");
    let path = std::env::var("PATH").expect("the test process has a PATH");
    assert!(
        text.lines().any(|l| l == format!("PATH={path}")),
        "PATH not inherited: {text}"
    );
}

#[test]
fn container_hooks_without_env_get_the_process_env() {
    let dir = tmp();
    let out = dir.path().join("env");
    let script = write_script(dir.path(), "env.sh", r#"/usr/bin/env > "$1""#);
    let hook = sh_hook(&script, &[&out.display().to_string()]);
    let read_vars = || -> Vec<String> {
        let mut vars: Vec<String> = fs::read_to_string(&out)
            .expect("env output")
            .lines()
            .filter(|l| !l.starts_with("PWD="))
            .map(str::to_string)
            .collect();
        vars.sort();
        vars
    };
    let process_env = ["PATH=/container/bin".to_string(), "TERM=xterm".to_string()];

    run_hooks_with_env(
        HookKind::StartContainer,
        std::slice::from_ref(&hook),
        STATE,
        &process_env,
    )
    .expect("hook succeeds");
    assert_eq!(read_vars(), process_env);

    // A hook's own env wins, even an empty one.
    for env in [&["OWN=1"][..], &[]] {
        run_hooks_with_env(
            HookKind::CreateContainer,
            &[with_env(hook.clone(), env)],
            STATE,
            &process_env,
        )
        .expect("hook succeeds");
        assert_eq!(read_vars(), env);
    }
}

#[test]
fn args_and_argv0_are_passed() {
    let dir = tmp();
    let out = dir.path().join("args");
    let script = format!(r#"tr '\0' ' ' < /proc/$$/cmdline > "{}""#, out.display());
    let hook = HookBuilder::default()
        .path("/bin/sh")
        .args(vec![
            "custom-argv0".to_string(),
            "-c".to_string(),
            script.clone(),
            "zero".to_string(),
            "with space".to_string(),
        ])
        .build()
        .expect("hook");
    run_hooks(HookKind::CreateContainer, &[hook], STATE).expect("hook succeeds");
    assert_eq!(
        fs::read_to_string(&out).expect("args output"),
        format!("custom-argv0 -c {script} zero with space ")
    );
}

#[test]
fn executes_script_directly_with_path_as_default_argv0() {
    let dir = tmp();
    let out = dir.path().join("out");
    let script = write_script(
        dir.path(),
        "direct.sh",
        &format!(r#"echo "$# $1" > "{}""#, out.display()),
    );
    let plain = HookBuilder::default().path(&script).build().expect("hook");
    let with_args = HookBuilder::default()
        .path(&script)
        .args(vec!["argv0".to_string(), "first".to_string()])
        .build()
        .expect("hook");
    for (hook, expected) in [(plain, "0 \n"), (with_args, "1 first\n")] {
        // Retry while another test's fork may still hold the script's write
        // descriptor (ETXTBSY); see the module docs.
        let mut attempts = 0;
        loop {
            match run_hooks(HookKind::StartContainer, std::slice::from_ref(&hook), STATE) {
                Ok(()) => break,
                Err(Error {
                    failure: Failure::Spawn(e),
                    ..
                }) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("hook failed: {e}"),
            }
        }
        assert_eq!(fs::read_to_string(&out).expect("out"), expected);
    }
}

#[test]
fn state_is_written_to_stdin() {
    let dir = tmp();
    let out = dir.path().join("state");
    let script = write_script(dir.path(), "cat.sh", r#"cat > "$1""#);
    let hook = sh_hook(&script, &[&out.display().to_string()]);
    run_hooks(HookKind::CreateRuntime, std::slice::from_ref(&hook), STATE).expect("succeeds");
    assert_eq!(fs::read(&out).expect("state"), STATE);

    // Larger than a pipe buffer: must be fed incrementally.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    run_hooks(HookKind::CreateRuntime, &[hook], &big).expect("succeeds");
    assert_eq!(fs::read(&out).expect("state"), big);
}

#[test]
fn hook_not_reading_stdin_is_fine() {
    let dir = tmp();
    let script = write_script(dir.path(), "noread.sh", "exit 0");
    let big = vec![b'x'; 1 << 20];
    let hooks = [with_timeout(sh_hook(&script, &[]), 30)];
    run_hooks(HookKind::Poststart, &hooks, &big).expect("EPIPE is ignored");
}

#[test]
fn large_output_does_not_block() {
    let dir = tmp();
    let script = write_script(
        dir.path(),
        "noisy.sh",
        "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2; exit 1",
    );
    let err = run_hooks(
        HookKind::CreateRuntime,
        &[with_timeout(sh_hook(&script, &[]), 30)],
        STATE,
    )
    .expect_err("exit 1");
    match err.failure {
        Failure::Exit { stderr, .. } => {
            assert!(stderr.len() <= 4096 + 16, "stderr capped: {}", stderr.len());
            assert!(stderr.ends_with("[...]"));
        }
        other => panic!("unexpected failure: {other}"),
    }
}

#[test]
fn nonzero_exit_reports_status_and_stderr() {
    let dir = tmp();
    let script = write_script(
        dir.path(),
        "fail.sh",
        "echo some-output; echo 'something broke' >&2; exit 3",
    );
    let err = run_hooks(HookKind::CreateRuntime, &[sh_hook(&script, &[])], STATE)
        .expect_err("hook fails");
    assert_eq!(err.kind, HookKind::CreateRuntime);
    assert_eq!(err.path, Path::new("/bin/sh"));
    match &err.failure {
        Failure::Exit {
            status,
            stdout,
            stderr,
        } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stdout, "some-output");
            assert_eq!(stderr, "something broke");
        }
        other => panic!("unexpected failure: {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("createRuntime"), "{msg}");
    assert!(msg.contains("/bin/sh"), "{msg}");
    assert!(msg.contains("something broke"), "{msg}");
}

#[test]
fn killed_by_signal_is_a_failure() {
    let dir = tmp();
    let script = write_script(dir.path(), "kill.sh", "kill -TERM $$");
    let err =
        run_hooks(HookKind::Poststart, &[sh_hook(&script, &[])], STATE).expect_err("hook killed");
    match err.failure {
        Failure::Exit { status, .. } => assert_eq!(status.signal(), Some(libc::SIGTERM)),
        other => panic!("unexpected failure: {other}"),
    }
}

#[test]
fn timeout_kills_hook() {
    let dir = tmp();
    let marker = dir.path().join("after");
    // `sleep` runs as a grandchild that keeps the output pipes open after
    // the hook itself is killed; that must not delay the error.
    let script = write_script(
        dir.path(),
        "slow.sh",
        &format!("echo started >&2; sleep 10; touch {}", marker.display()),
    );
    let start = Instant::now();
    let err = run_hooks(
        HookKind::CreateRuntime,
        &[with_timeout(sh_hook(&script, &[]), 1)],
        STATE,
    )
    .expect_err("must time out");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(err.failure.is_timeout(), "{err}");
    match &err.failure {
        Failure::TimedOut {
            timeout, stderr, ..
        } => {
            assert_eq!(*timeout, 1);
            assert_eq!(stderr, "started");
        }
        other => panic!("unexpected failure: {other}"),
    }
    assert!(!marker.exists());
}

#[test]
fn background_grandchild_does_not_block_completion() {
    let dir = tmp();
    let script = write_script(dir.path(), "bg.sh", "sleep 10 & exit 0");
    let start = Instant::now();
    run_hooks(HookKind::Poststop, &[sh_hook(&script, &[])], STATE).expect("succeeds");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn invalid_timeout_is_rejected() {
    let dir = tmp();
    let marker = dir.path().join("ran");
    let script = write_script(dir.path(), "t.sh", &format!("touch {}", marker.display()));
    for secs in [0, -5] {
        let err = run_hooks(
            HookKind::CreateRuntime,
            &[with_timeout(sh_hook(&script, &[]), secs)],
            STATE,
        )
        .expect_err("invalid timeout");
        assert!(
            matches!(err.failure, Failure::InvalidTimeout(s) if s == secs),
            "{err}"
        );
    }
    assert!(!marker.exists());
}

#[test]
fn missing_or_non_executable_path_is_spawn_error() {
    let dir = tmp();
    let missing = HookBuilder::default()
        .path(dir.path().join("does-not-exist"))
        .build()
        .expect("hook");
    let err = run_hooks(HookKind::CreateRuntime, &[missing], STATE).expect_err("missing");
    match &err.failure {
        Failure::Spawn(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("unexpected failure: {other}"),
    }
    assert!(err.to_string().contains("does-not-exist"), "{err}");

    let plain = dir.path().join("plain");
    fs::write(&plain, "#!/bin/sh\nexit 0\n").expect("write");
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).expect("chmod");
    let hook = HookBuilder::default().path(&plain).build().expect("hook");
    let err = run_hooks(HookKind::CreateRuntime, &[hook], STATE).expect_err("not executable");
    assert!(matches!(err.failure, Failure::Spawn(_)), "{err}");
}

#[test]
fn first_failure_stops_run_hooks() {
    let dir = tmp();
    let marker = dir.path().join("second");
    let fail = write_script(dir.path(), "fail.sh", "exit 1");
    let mark = write_script(dir.path(), "mark.sh", r#"touch "$1""#);
    let hooks = [
        sh_hook(&fail, &[]),
        sh_hook(&mark, &[&marker.display().to_string()]),
    ];
    run_hooks(HookKind::CreateContainer, &hooks, STATE).expect_err("first fails");
    assert!(!marker.exists());
}

#[test]
fn best_effort_continues_after_failure() {
    let dir = tmp();
    let marker = dir.path().join("second");
    let fail = write_script(dir.path(), "fail.sh", "exit 1");
    let mark = write_script(dir.path(), "mark.sh", r#"touch "$1""#);
    let hooks = [
        sh_hook(&fail, &[]),
        HookBuilder::default()
            .path(dir.path().join("missing"))
            .build()
            .expect("hook"),
        sh_hook(&mark, &[&marker.display().to_string()]),
    ];
    run_hooks_best_effort(HookKind::Poststop, &hooks, STATE);
    assert!(marker.exists());
}
