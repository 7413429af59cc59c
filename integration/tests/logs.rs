//! Container logs through the real shim path: the real containerd 1.6 `ctr`
//! runs containers on an isolated berthd with `--log-uri binary://...`
//! naming `berth-logger`; our shim starts the logger with the container's
//! stdout and stderr, and the logger writes docker's json-file log. The log
//! keeps growing while berthd is dead, the logger exits with the container,
//! and nothing is left behind (no logger process either).

// The helpers below are test code too: a panic is how they report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_integration::berthd::Berthd;
use berth_integration::containerd::{target_binary, IMAGE};
use berth_integration::leak::processes_with_cmdline;
use berth_integration::wait_until;
use berthd::logs::writer::rotated_path;
use berthd::logs::{
    logger_uri, LogEntry, LogReader, LogStream, LoggerConfig, ReadOptions, Rotation,
};

/// A container that prints `out N` and `err N` until SIGTERM, then `bye`.
const CHATTY: &str = "trap 'echo bye; exit 0' TERM; i=0; \
    while true; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); sleep 0.05; done";

fn log_dir(berthd: &Berthd) -> PathBuf {
    let dir = berthd.dir().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(log: &Path, options: &ReadOptions) -> Vec<LogEntry> {
    LogReader::open(log)
        .unwrap()
        .entries(options)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn texts(entries: &[LogEntry], stream: LogStream) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| String::from_utf8(e.bytes.clone()).unwrap())
        .collect()
}

/// The loggers writing `log`.
fn loggers(log: &Path) -> Vec<i32> {
    processes_with_cmdline("berth-logger", &log.to_string_lossy())
}

fn assert_logger_gone(berthd: &Berthd, log: &Path) {
    let gone = wait_until(Duration::from_secs(10), || loggers(log).is_empty());
    assert!(gone, "logger left: {:?}\n{}", loggers(log), berthd.log());
}

#[test]
fn the_log_grows_while_berthd_is_dead_and_the_logger_ends_with_the_container() {
    let Some(mut berthd) = Berthd::start("the container log tests") else {
        return;
    };
    let log = log_dir(&berthd).join("c1.log");
    let uri = logger_uri(
        &target_binary("berth-logger"),
        &LoggerConfig {
            path: log.clone(),
            rotation: Rotation::default(),
            raw: false,
        },
    );
    berthd.ctr_ok(&[
        "run",
        "-d",
        "--log-uri",
        &uri,
        IMAGE,
        "c1",
        "sh",
        "-c",
        CHATTY,
    ]);
    berthd.wait_status("c1", "RUNNING");
    let count = || entries(&log, &ReadOptions::default()).len();
    assert!(
        wait_until(Duration::from_secs(10), || count() >= 10),
        "the log did not fill: {} entries\n{}",
        count(),
        berthd.log()
    );
    assert_eq!(loggers(&log).len(), 1, "one logger per container");

    berthd.kill_hard();
    let before = count();
    assert!(
        wait_until(Duration::from_secs(10), || count() >= before + 20),
        "the log stopped growing with berthd dead: {before} -> {}",
        count()
    );
    berthd.launch();

    berthd.ctr_ok(&["task", "kill", "c1"]);
    berthd.wait_status("c1", "STOPPED");
    assert_eq!(berthd.task_rm("c1"), 0);
    berthd.ctr_ok(&["containers", "rm", "c1"]);
    assert_logger_gone(&berthd, &log);

    let all = entries(&log, &ReadOptions::default());
    let out = texts(&all, LogStream::Stdout);
    let err = texts(&all, LogStream::Stderr);
    assert!(out.len() > before / 2, "{} stdout entries", out.len());
    // Every line, in order, on its own stream; the last one at SIGTERM.
    let (last, numbered) = out.split_last().unwrap();
    assert_eq!(last, "bye\n");
    for (i, line) in numbered.iter().enumerate() {
        assert_eq!(line, &format!("out {i}\n"));
    }
    for (i, line) in err.iter().enumerate() {
        assert_eq!(line, &format!("err {i}\n"));
    }
    assert!(err.len() + 1 >= numbered.len() && err.len() <= numbered.len());
    assert!(
        all.windows(2).all(|w| w[0].time <= w[1].time),
        "timestamps go back somewhere"
    );
    // The file is docker's: one JSON object per line, keys in its order.
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("out 0")).unwrap();
    assert!(
        line.starts_with("{\"log\":\"out 0\\n\",\"stream\":\"stdout\",\"time\":\"20"),
        "{line}"
    );
    berthd.assert_no_leaks();
}

#[test]
fn a_rotated_log_from_the_real_logger_and_its_tail() {
    let Some(berthd) = Berthd::start("the container log tests") else {
        return;
    };
    let log = log_dir(&berthd).join("c2.log");
    let rotation = Rotation::from_log_opts([("max-size", "2k"), ("max-file", "3")]).unwrap();
    let uri = logger_uri(
        &target_binary("berth-logger"),
        &LoggerConfig {
            path: log.clone(),
            rotation,
            raw: false,
        },
    );
    let script = "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); done; \
                  printf 'no newline'";
    berthd.ctr_ok(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        IMAGE,
        "c2",
        "sh",
        "-c",
        script,
    ]);
    assert_logger_gone(&berthd, &log);

    for n in 1..=2 {
        let len = std::fs::metadata(rotated_path(&log, n)).unwrap().len();
        assert!((2048..2048 + 200).contains(&len), "{n}: {len} bytes");
    }
    assert!(!rotated_path(&log, 3).exists(), "max-file 3 keeps 3 files");

    let tail = ReadOptions {
        tail: Some(5),
        stderr: false,
        ..ReadOptions::default()
    };
    let mut want: Vec<String> = (296..300).map(|i| format!("line {i}\n")).collect();
    want.push("no newline".into());
    assert_eq!(texts(&entries(&log, &tail), LogStream::Stdout), want);
    // What is kept is the newest part, whole and in order, and what was
    // left without a newline at the end.
    let all = entries(&log, &ReadOptions::default());
    let mut out = texts(&all, LogStream::Stdout);
    assert_eq!(out.pop().unwrap(), "no newline");
    let first = 300 - out.len();
    let want: Vec<String> = (first..300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(out, want);
    assert!(first > 0, "the oldest file was dropped");
    berthd.assert_no_leaks();
}
