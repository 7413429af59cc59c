//! The Docker SDK for Python (PyPI's `docker`, installed by hack/test in
//! target/pyenv) against berthd: it runs a container, reads its logs,
//! lists, inspects and removes it, and gets dockerd's errors for bad
//! calls.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::path::PathBuf;
use std::process::Command;

use berth_integration::containerd::image_archive;
use docker_support::{clis, Berthd};

/// The SDK's Python, or `None` (with a SKIP line) when hack/test has not
/// made the venv.
fn sdk_python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import docker"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: the docker SDK is not installed (hack/test makes target/pyenv)");
        return None;
    }
    Some(python)
}

const SCRIPT: &str = r#"
import sys, docker
client = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
assert client.ping()
container = client.containers.run(
    "berth-busybox", ["sh", "-c", "echo hello from the sdk; echo to stderr >&2; exit 3"],
    detach=True, name="sdk", labels={"made-by": "sdk"})
result = container.wait()
assert result["StatusCode"] == 3, result
assert container.logs(stdout=True, stderr=False) == b"hello from the sdk\n", container.logs()
assert container.logs(stdout=False, stderr=True) == b"to stderr\n", container.logs()
container.reload()
assert container.status == "exited", container.status
assert container.attrs["State"]["ExitCode"] == 3
listed = client.containers.list(all=True, filters={"label": "made-by=sdk"})
assert [c.name for c in listed] == ["sdk"], listed
try:
    client.containers.get("no-such-container")
    raise SystemExit("expected NotFound")
except docker.errors.NotFound as err:
    assert "No such container" in str(err), err
try:
    client.containers.create("berth-busybox", "true", name="sdk")
    raise SystemExit("expected a conflict")
except docker.errors.APIError as err:
    assert err.status_code == 409, err
container.remove()
box = client.containers.run("berth-busybox", ["sleep", "1000"], detach=True, name="box")
code, (out, err) = box.exec_run(["sh", "-c", "echo out; echo err >&2; exit 4"], demux=True)
assert (code, out, err) == (4, b"out\n", b"err\n"), (code, out, err)
code, out = box.exec_run("id -un", user="nobody", environment={"A": "b"})
assert (code, out) == (0, b"nobody\n"), (code, out)
chunks = b"".join(box.exec_run(["seq", "1", "3"], stream=True).output)
assert chunks == b"1\n2\n3\n", chunks
box.remove(force=True)
assert client.containers.list(all=True) == []
print("sdk ok")
"#;

#[test]
fn the_python_sdk_runs_a_container_reads_its_logs_and_execs() {
    let Some(python) = sdk_python() else {
        return;
    };
    let Some(daemon) = Berthd::start() else {
        return;
    };
    let clis = clis();
    daemon.ok(&clis[0], &["load", "-i", image_archive().to_str().unwrap()]);
    let out = Command::new(python)
        .args(["-c", SCRIPT])
        .arg(&daemon.docker_socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sdk ok\n");
}
