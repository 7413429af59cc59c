//! berthd's runtime manager with real shims: ours (driving berth) and
//! Debian's containerd-shim-runc-v2 (driving runc). Bundles, the ttrpc event
//! endpoint, re-adoption after a restart, and a shim killed under a task.

#![allow(clippy::unwrap_used)] // test helpers: a failed step should panic with its error

use berth_integration::containerd::{shim_binary, target_binary};
use berth_integration::{leak, wait_until, Bundle};
use berthd::runtime::shim::{ctx, ctx_forever, ShimBinaries};
use berthd::runtime::{forward, Config, CreateOptions, EventSink, TaskEvent, TaskManager};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Recorder(Mutex<Vec<TaskEvent>>);

impl EventSink for Recorder {
    fn publish(&self, event: TaskEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    fn topics(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.topic.clone())
            .collect()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    config: Config,
    events: Arc<Recorder>,
    _server: containerd_shim_protos::ttrpc::asynchronous::Server,
}

const NS: &str = "berthd-rt-test";

async fn fixture() -> Option<Fixture> {
    if !berth_integration::is_root() {
        eprintln!("SKIP: needs root");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("brt")
        .tempdir_in("/tmp")
        .unwrap();
    let mut binaries = ShimBinaries::default();
    binaries.set("io.containerd.berth.v2", &shim_binary().to_string_lossy());
    binaries.set("io.containerd.runc.v2", "/usr/bin/containerd-shim-runc-v2");
    let config = Config {
        state_dir: dir.path().join("state"),
        grpc_address: dir.path().join("berthd.sock"),
        ttrpc_address: dir.path().join("berthd.sock.ttrpc"),
        publish_binary: "/bin/true".into(),
        binaries,
        debug: false,
    };
    let events = Arc::new(Recorder::default());
    let server = forward::serve(&config.ttrpc_address, events.clone())
        .await
        .unwrap();
    Some(Fixture {
        dir,
        config,
        events,
        _server: server,
    })
}

fn options(binary: &Path, root: &Path) -> Any {
    let opts = Options {
        binary_name: binary.to_string_lossy().into_owned(),
        root: root.to_string_lossy().into_owned(),
        ..Default::default()
    };
    Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: opts.write_to_bytes().unwrap(),
        ..Default::default()
    }
}

/// A spec + rootfs (to be bind-mounted as the task's rootfs).
fn image(args: &[&str]) -> (Bundle, Vec<u8>) {
    let mut b = Bundle::new(&berth_integration::harness::unique_id("berthd-rt"));
    b.args(args);
    let spec = serde_json::to_vec(&b.spec).unwrap();
    (b, spec)
}

fn create_options(fx: &Fixture, runtime: &str, source: &Bundle, stdout: &Path) -> CreateOptions {
    let (binary, root) = if runtime == "io.containerd.runc.v2" {
        (
            Path::new("/usr/sbin/runc").to_path_buf(),
            fx.dir.path().join("runc-root"),
        )
    } else {
        (target_binary("berth"), fx.dir.path().join("berth-root"))
    };
    CreateOptions {
        runtime: runtime.to_string(),
        rootfs: vec![api::Mount {
            type_: "bind".into(),
            source: source.rootfs().to_string_lossy().into_owned(),
            options: vec!["rbind".into(), "rw".into()],
            ..Default::default()
        }],
        // Both streams to one file, as `ctr run --log-uri file://...` does (the
        // runc shim needs both when the scheme is file).
        stdout: format!("file://{}", stdout.display()),
        stderr: format!("file://{}", stdout.display()),
        options: Some(options(&binary, &root)),
        ..Default::default()
    }
}

async fn run_to_completion(runtime: &str) {
    let Some(fx) = fixture().await else { return };
    if runtime == "io.containerd.runc.v2" && !Path::new("/usr/bin/containerd-shim-runc-v2").exists()
    {
        eprintln!("SKIP: containerd-shim-runc-v2 missing");
        return;
    }
    let manager = TaskManager::new(fx.config.clone(), fx.events.clone());
    let (source, spec) = image(&["sh", "-c", "echo hello from the task; exit 3"]);
    let out = fx.dir.path().join("out.log");
    let task = manager
        .create(
            NS,
            &source.id,
            &spec,
            create_options(&fx, runtime, &source, &out),
        )
        .await
        .unwrap();
    let bundle = task.bundle.path().to_path_buf();
    assert!(bundle.join("config.json").exists());
    let id = source.id.clone();
    task.client()
        .start(
            ctx(),
            &api::StartRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let waited = task
        .client()
        .wait(
            ctx_forever(),
            &api::WaitRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(waited.exit_status, 3);
    let deleted = manager.delete(NS, &id).await.unwrap();
    assert_eq!(deleted.exit_status, 3);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "hello from the task\n"
    );
    assert!(!bundle.exists(), "bundle left");
    assert!(manager.list(NS).is_empty());
    assert!(wait_until(Duration::from_secs(5), || {
        let t = fx.events.topics();
        t.contains(&"/tasks/delete".to_string())
    }));
    let topics = fx.events.topics();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{topics:?}"
    );
    assert!(fx
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|e| e.namespace == NS));
    assert!(leak::mounts_mentioning(&fx.dir.path().to_string_lossy()).is_empty());
    // Delete asks the shim to exit without waiting for it: it goes shortly.
    assert!(wait_until(Duration::from_secs(10), || {
        leak::processes_with_cmdline("containerd-shim", &fx.dir.path().to_string_lossy()).is_empty()
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_shim_runs_a_task_to_completion() {
    run_to_completion("io.containerd.berth.v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_shim_runs_a_task_to_completion() {
    run_to_completion("io.containerd.runc.v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_readopts_running_shims_and_dead_ones_are_reported() {
    let Some(fx) = fixture().await else { return };
    let (source, spec) = image(&["sleep", "1000"]);
    let out = fx.dir.path().join("out.log");
    let id = source.id.clone();
    {
        // A first berthd starts the task, then goes away.
        let manager = TaskManager::new(fx.config.clone(), fx.events.clone());
        let task = manager
            .create(
                NS,
                &id,
                &spec,
                create_options(&fx, "io.containerd.berth.v2", &source, &out),
            )
            .await
            .unwrap();
        task.client()
            .start(
                ctx(),
                &api::StartRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    // The next one finds it running.
    let manager = TaskManager::new(fx.config.clone(), fx.events.clone());
    assert_eq!(manager.restore().await.unwrap(), (1, 0));
    let task = manager.get(NS, &id).unwrap();
    let state = task
        .client()
        .state(
            ctx(),
            &api::StateRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(state.status.value(), api::Status::RUNNING as i32);

    // Its shim is killed: the task is reported exited and cleaned up.
    let shim_pid = task.shim.pid() as i32;
    let task_pid = task.shim.task_pid() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(15), task.shim_gone())
        .await
        .unwrap();
    assert_eq!(gone.exit_status, 137);
    assert!(manager.get(NS, &id).is_err());
    assert!(!task.bundle.path().exists(), "bundle left");
    assert!(wait_until(Duration::from_secs(10), || !Path::new(
        &format!("/proc/{task_pid}")
    )
    .exists()
        || std::fs::read_to_string(format!("/proc/{task_pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)));
    assert!(fx.events.topics().contains(&"/tasks/exit".to_string()));
    assert!(leak::mounts_mentioning(&fx.dir.path().to_string_lossy()).is_empty());
    // A berthd starting now finds nothing to adopt.
    let again = TaskManager::new(fx.config.clone(), fx.events.clone());
    assert_eq!(again.restore().await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_leaves_nothing() {
    let Some(fx) = fixture().await else { return };
    let manager = TaskManager::new(fx.config.clone(), fx.events.clone());
    let (source, spec) = image(&["true"]);
    let out = fx.dir.path().join("out.log");
    // No shim for this runtime name.
    let mut opts = create_options(&fx, "io.containerd.berth.v2", &source, &out);
    opts.runtime = "io.containerd.nosuch.v9".into();
    let e = manager
        .create(NS, &source.id, &spec, opts)
        .await
        .unwrap_err();
    assert_eq!(e.kind, berthd::ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("containerd-shim-nosuch-v9"), "{e}");
    // A spec that is not JSON.
    let opts = create_options(&fx, "io.containerd.berth.v2", &source, &out);
    let e = manager
        .create(NS, &source.id, b"nonsense", opts)
        .await
        .unwrap_err();
    assert_eq!(e.kind, berthd::ErrorKind::InvalidArgument, "{e}");
    // The shim refuses the task (a rootfs mount that cannot work).
    let mut opts = create_options(&fx, "io.containerd.berth.v2", &source, &out);
    opts.rootfs[0].source = "/nonexistent/rootfs".into();
    let e = manager
        .create(NS, &source.id, &spec, opts)
        .await
        .unwrap_err();
    assert!(e.message.contains("/nonexistent/rootfs"), "{e}");
    assert!(manager.list(NS).is_empty());
    assert!(berthd::runtime::bundle::Bundle::scan(&fx.config.state_dir)
        .unwrap()
        .is_empty());
    assert!(wait_until(Duration::from_secs(10), || {
        leak::processes_with_cmdline("containerd-shim", &fx.dir.path().to_string_lossy()).is_empty()
    }));
}
