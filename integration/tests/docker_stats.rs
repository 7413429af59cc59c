//! `docker stats` and `docker top` against berthd with the real docker
//! CLIs: usage read from the container's cgroup (its memory limit, a busy
//! process's CPU share, its pids), network counters of its namespace,
//! the streamed API's samples; the host's `ps` narrowed to the
//! container's processes; and what a stopped container answers.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use docker_support::Berthd;
use serde_json::Value;

const IMAGE: &str = "berth-busybox";

#[test]
fn stats_and_top_of_running_and_stopped_containers() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    daemon.ok(
        &clis[0],
        &[
            "run",
            "-d",
            "--name",
            "busy",
            "-m",
            "64m",
            IMAGE,
            "sh",
            "-c",
            "while :; do :; done",
        ],
    );
    daemon.ok(
        &clis[0],
        &["run", "-d", "--name", "idle", IMAGE, "sleep", "1000"],
    );

    for cli in &clis {
        let name = cli.name;
        let out = daemon.ok(
            cli,
            &[
                "stats",
                "--no-stream",
                "--format",
                "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
                "busy",
                "idle",
            ],
        );
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let busy = rows.iter().find(|r| r[0] == "busy").expect(&out);
        let cpu: f64 = busy[1].trim_end_matches('%').parse().unwrap();
        // A spinning shell on an otherwise quiet machine: most of a CPU.
        assert!(cpu > 20.0, "{name}: {out}");
        assert_eq!(busy[4], "64MiB", "{name}: the limit: {out}");
        assert_eq!(busy[5], "1", "{name}: {out}");
        let idle = rows.iter().find(|r| r[0] == "idle").expect(&out);
        assert_eq!(idle[1], "0.00%", "{name}: {out}");

        let top = daemon.ok(cli, &["top", "idle"]);
        let lines: Vec<&str> = top.lines().collect();
        assert!(
            lines[0].contains("PID") && lines[0].contains("CMD"),
            "{name}: {top}"
        );
        assert_eq!(
            lines.len(),
            2,
            "{name}: only the container's process: {top}"
        );
        assert!(lines[1].ends_with("sleep 1000"), "{name}: {top}");
        let top = daemon.ok(cli, &["top", "idle", "-o", "pid,comm"]);
        assert_eq!(
            top.lines().nth(1).map(|l| l.split_whitespace().nth(1)),
            Some(Some("sleep")),
            "{name}: {top}"
        );
    }

    // The API: streamed samples carry the previous one; networks counted.
    let mut stream = UnixStream::connect(&daemon.docker_socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /v1.41/containers/idle/stats HTTP/1.0\r\nHost: docker\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut samples = Vec::new();
    let mut line = String::new();
    while samples.len() < 2 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        if line.starts_with('{') {
            samples.push(serde_json::from_str::<Value>(&line).unwrap());
        }
    }
    assert_eq!(samples[0]["name"], "/idle");
    assert_eq!(samples[1]["preread"], samples[0]["read"], "{}", samples[1]);
    assert_eq!(
        samples[1]["precpu_stats"]["cpu_usage"]["total_usage"],
        samples[0]["cpu_stats"]["cpu_usage"]["total_usage"]
    );
    assert!(
        samples[1]["cpu_stats"]["system_cpu_usage"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        samples[1]["networks"]["eth0"]["rx_packets"].is_u64(),
        "{}",
        samples[1]
    );
    assert!(samples[1]["memory_stats"]["usage"].as_u64().unwrap() > 0);

    // Stopped: one empty sample; top refused.
    daemon.ok(&clis[0], &["stop", "-t", "0", "idle"]);
    let (status, body) = daemon.http("GET", "/v1.41/containers/idle/stats?stream=0", b"");
    assert_eq!(status, 200, "{body}");
    let sample: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(sample["read"], "0001-01-01T00:00:00Z", "{sample}");
    let refused = daemon.fails(&clis[0], &["top", "idle"]);
    assert!(refused.contains("is not running"), "{refused}");
    let (status, _) = daemon.http("GET", "/v1.41/containers/no-such/stats?stream=0", b"");
    assert_eq!(status, 404);
    let (status, _) = daemon.http(
        "GET",
        "/v1.41/containers/busy/stats?stream=1&one-shot=1",
        b"",
    );
    assert_eq!(status, 400);
}
