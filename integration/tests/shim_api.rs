//! The shim's task API spoken directly over ttrpc (as containerd would),
//! for the cases `ctr` cannot produce: a missing bundle, a bad options
//! payload, Start twice, Delete of a running task, unknown ids; plus the
//! rootfs mounts of CreateTaskRequest and `start`/`delete` housekeeping.
#![allow(clippy::unwrap_used)] // test helpers: a failed step should panic with its error

use berth_integration::containerd::{shim_binary, target_binary};
use berth_integration::{leak, Bundle};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::ttrpc::context::Context;
use containerd_shim_protos::ttrpc::{Client, Code, Error};
use containerd_shim_protos::TaskClient;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const NS: &str = "berth-api-test";

struct Shim {
    /// Set once the test shut the shim down itself.
    shut_down: bool,
    dir: tempfile::TempDir,
    address: String,
    client: TaskClient,
    id: String,
    bundle: PathBuf,
}

fn ctx() -> Context {
    containerd_shim_protos::ttrpc::context::with_timeout(Duration::from_secs(20).as_nanos() as i64)
}

fn code(err: Error) -> (Code, String) {
    match err {
        Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a status: {other:?}"),
    }
}

fn options(dir: &Path) -> MessageField<Any> {
    let opts = Options {
        binary_name: target_binary("berth").to_string_lossy().into_owned(),
        root: dir.join("runtime").to_string_lossy().into_owned(),
        ..Default::default()
    };
    MessageField::some(Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: opts.write_to_bytes().unwrap(),
        ..Default::default()
    })
}

impl Shim {
    /// `shim start` in `bundle`, then connect.
    fn start(bundle: &Path, id: &str) -> Shim {
        let dir = tempfile::Builder::new()
            .prefix("bshim")
            .tempdir_in("/tmp")
            .unwrap();
        let fake_containerd = dir.path().join("containerd.sock");
        let out = Command::new(shim_binary())
            .args(["-namespace", NS, "-id", id, "-address"])
            .arg(&fake_containerd)
            .arg("start")
            .current_dir(bundle)
            .env_remove("TTRPC_ADDRESS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8(out.stdout).unwrap();
        assert!(address.starts_with("unix://"), "{address:?}");
        assert_eq!(
            std::fs::read_to_string(bundle.join("address")).unwrap(),
            address
        );
        let socket = address.trim_start_matches("unix://");
        let mode = std::fs::metadata(socket)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.unwrap() & 0o777, 0o600, "socket must be 0600");
        let client = TaskClient::new(Client::connect(&address).unwrap());
        Shim {
            shut_down: false,
            dir,
            address,
            client,
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
        }
    }

    fn create_request(&self) -> api::CreateTaskRequest {
        api::CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.bundle.to_string_lossy().into_owned(),
            options: options(self.dir.path()),
            ..Default::default()
        }
    }

    /// Start the created task, wait for it, delete it; its exit status.
    fn start_wait_delete(&self) -> u32 {
        let id = self.id.clone();
        self.client
            .start(
                ctx(),
                &api::StartRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        let waited = self
            .client
            .wait(
                ctx(),
                &api::WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        let deleted = self
            .client
            .delete(
                ctx(),
                &api::DeleteRequest {
                    id,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(deleted.exit_status, waited.exit_status);
        waited.exit_status
    }

    fn shutdown(mut self) {
        self.shut_down = true;
        let _ = self.client.shutdown(
            ctx(),
            &api::ShutdownRequest {
                id: self.id.clone(),
                ..Default::default()
            },
        );
        let socket = PathBuf::from(self.address.trim_start_matches("unix://"));
        assert!(
            berth_integration::wait_until(Duration::from_secs(10), || !socket.exists()),
            "the shim did not exit and remove its socket"
        );
    }
}

/// A test that failed half-way must not leave its shim running.
impl Drop for Shim {
    fn drop(&mut self) {
        if !self.shut_down {
            let _ = self.client.shutdown(
                ctx(),
                &api::ShutdownRequest {
                    id: self.id.clone(),
                    now: true,
                    ..Default::default()
                },
            );
        }
    }
}

#[test]
fn bad_requests_get_precise_codes_and_leave_nothing() {
    if !berth_integration::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let mut bundle = Bundle::new(&berth_integration::harness::unique_id("shim-api"));
    bundle.args(&["sleep", "1000"]).write();
    let shim = Shim::start(bundle.path(), &bundle.id);

    // A missing bundle: NotFound, naming it.
    let mut req = shim.create_request();
    req.bundle = "/nonexistent/bundle".into();
    let (c, m) = code(shim.client.create(ctx(), &req).unwrap_err());
    assert_eq!(c, Code::NOT_FOUND, "{m}");
    assert!(m.contains("/nonexistent/bundle"), "{m}");

    // Options that are not runc options, or are garbage: InvalidArgument.
    let mut req = shim.create_request();
    req.options = MessageField::some(Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: vec![0xff, 0xff, 0xff, 0xff],
        ..Default::default()
    });
    let (c, m) = code(shim.client.create(ctx(), &req).unwrap_err());
    assert_eq!(c, Code::INVALID_ARGUMENT, "{m}");
    let mut req = shim.create_request();
    req.options = MessageField::some(Any {
        type_url: "example.Unknown".into(),
        value: vec![],
        ..Default::default()
    });
    let (c, m) = code(shim.client.create(ctx(), &req).unwrap_err());
    assert_eq!(c, Code::INVALID_ARGUMENT, "{m}");
    assert!(m.contains("example.Unknown"), "{m}");

    // Unknown container.
    let (c, _) = code(
        shim.client
            .state(
                ctx(),
                &api::StateRequest {
                    id: "nosuch".into(),
                    ..Default::default()
                },
            )
            .unwrap_err(),
    );
    assert_eq!(c, Code::NOT_FOUND);

    // The real thing, then misuse of it.
    let created = shim.client.create(ctx(), &shim.create_request()).unwrap();
    assert!(created.pid > 0);
    let (c, m) = code(
        shim.client
            .create(ctx(), &shim.create_request())
            .unwrap_err(),
    );
    assert_eq!(c, Code::ALREADY_EXISTS, "{m}");
    let start = api::StartRequest {
        id: shim.id.clone(),
        ..Default::default()
    };
    assert_eq!(shim.client.start(ctx(), &start).unwrap().pid, created.pid);
    let (c, m) = code(shim.client.start(ctx(), &start).unwrap_err());
    assert_eq!(c, Code::FAILED_PRECONDITION, "{m}");
    let delete = api::DeleteRequest {
        id: shim.id.clone(),
        ..Default::default()
    };
    let (c, m) = code(shim.client.delete(ctx(), &delete).unwrap_err());
    assert_eq!(c, Code::FAILED_PRECONDITION, "{m}");
    assert!(m.contains("running"), "{m}");
    let kill_exec = api::KillRequest {
        id: shim.id.clone(),
        exec_id: "nosuch".into(),
        signal: 9,
        ..Default::default()
    };
    let (c, m) = code(shim.client.kill(ctx(), &kill_exec).unwrap_err());
    assert_eq!(c, Code::NOT_FOUND, "{m}");
    let (c, _) = code(
        shim.client
            .checkpoint(
                ctx(),
                &api::CheckpointTaskRequest {
                    id: shim.id.clone(),
                    ..Default::default()
                },
            )
            .unwrap_err(),
    );
    assert_eq!(c, Code::UNIMPLEMENTED);

    // Kill, wait, delete: the status comes through, then nothing is left.
    let kill = api::KillRequest {
        id: shim.id.clone(),
        signal: 9,
        ..Default::default()
    };
    shim.client.kill(ctx(), &kill).unwrap();
    let waited = shim
        .client
        .wait(
            ctx(),
            &api::WaitRequest {
                id: shim.id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(waited.exit_status, 137);
    let deleted = shim.client.delete(ctx(), &delete).unwrap();
    assert_eq!(deleted.exit_status, 137);
    let (c, _) = code(shim.client.kill(ctx(), &kill).unwrap_err());
    assert_eq!(c, Code::NOT_FOUND);
    let id = shim.id.clone();
    shim.shutdown();
    assert!(leak::processes_of(&id, &bundle.path().to_string_lossy()).is_empty());
}

#[test]
fn rootfs_mounts_are_mounted_and_unmounted() {
    if !berth_integration::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    // The image lives elsewhere; the bundle's rootfs starts empty.
    let mut source = Bundle::new(&berth_integration::harness::unique_id("shim-rootfs"));
    source.args(&["sh", "-c", "cat /marker"]).write();
    std::fs::write(source.rootfs().join("marker"), "from the mount\n").unwrap();
    let bundle = tempfile::Builder::new()
        .prefix("bshim-b")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::copy(source.config_path(), bundle.path().join("config.json")).unwrap();
    std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
    let out_file = bundle.path().join("stdout.log");

    let shim = Shim::start(bundle.path(), &source.id);
    let mut req = shim.create_request();
    req.rootfs = vec![containerd_shim_protos::types::mount::Mount {
        type_: "bind".into(),
        source: source.rootfs().to_string_lossy().into_owned(),
        options: vec!["rbind".into(), "rw".into()],
        ..Default::default()
    }];
    req.stdout = format!("file://{}", out_file.display());
    shim.client.create(ctx(), &req).unwrap();
    assert!(
        bundle.path().join("rootfs/marker").exists(),
        "rootfs not mounted"
    );
    assert_eq!(shim.start_wait_delete(), 0);
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "from the mount\n"
    );
    assert!(
        !bundle.path().join("rootfs/marker").exists(),
        "rootfs still mounted"
    );
    assert!(leak::mounts_mentioning(&bundle.path().to_string_lossy()).is_empty());
    shim.shutdown();
}

#[test]
fn delete_action_cleans_up_after_a_dead_shim() {
    if !berth_integration::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let mut bundle = Bundle::new(&berth_integration::harness::unique_id("shim-del"));
    bundle.args(&["sleep", "1000"]).write();
    let shim = Shim::start(bundle.path(), &bundle.id);
    shim.client.create(ctx(), &shim.create_request()).unwrap();
    // The serving shim dies; containerd would now run `delete`.
    let pid = shim
        .client
        .connect(ctx(), &api::ConnectRequest::default())
        .unwrap()
        .shim_pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = Command::new(shim_binary())
        .args(["-namespace", NS, "-id", &bundle.id, "-address"])
        .arg(shim.dir.path().join("containerd.sock"))
        .args(["-bundle"])
        .arg(bundle.path())
        .arg("delete")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = api::DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(response.exit_status, 137);
    assert!(response.exited_at.is_some());
    let runtime_state = shim.dir.path().join("runtime").join(NS).join(&bundle.id);
    assert!(
        !runtime_state.exists(),
        "runtime state left: {}",
        runtime_state.display()
    );
    assert!(
        berth_integration::wait_until(Duration::from_secs(10), || leak::processes_of(
            &bundle.id,
            &bundle.path().to_string_lossy()
        )
        .is_empty()),
        "container processes left"
    );
    let socket = PathBuf::from(shim.address.trim_start_matches("unix://"));
    assert!(!socket.exists(), "dead shim's socket left");
}

#[test]
fn binary_logger_gets_both_streams() {
    if !berth_integration::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let mut bundle = Bundle::new(&berth_integration::harness::unique_id("shim-logger"));
    bundle
        .args(&["sh", "-c", "echo to-out; echo to-err >&2"])
        .write();
    let work = tempfile::Builder::new()
        .prefix("bshim-l")
        .tempdir_in("/tmp")
        .unwrap();
    // A logging binary as containerd defines them: stdout on fd 3, stderr
    // on fd 4, ready once fd 5 is closed; its arguments from the URI query.
    // It renames its last file into place, so the test sees it whole.
    let logger = work.path().join("logger.sh");
    std::fs::write(
        &logger,
        "#!/bin/sh\nexec 5>&-\ncat <&3 >\"$2.out\" & cat <&4 >\"$2.err\" & wait\necho \"$CONTAINER_ID $CONTAINER_NAMESPACE\" >\"$2.tmp\"\nmv \"$2.tmp\" \"$2.env\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let prefix = work.path().join("log");
    let uri = format!("binary://{}?dest={}", logger.display(), prefix.display());

    let shim = Shim::start(bundle.path(), &bundle.id);
    let mut req = shim.create_request();
    req.stdout = uri.clone();
    req.stderr = uri;
    shim.client.create(ctx(), &req).unwrap();
    assert_eq!(shim.start_wait_delete(), 0);
    let env_file = prefix.with_extension("env");
    assert!(
        berth_integration::wait_until(Duration::from_secs(10), || env_file.exists()),
        "the logger never finished"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.with_extension("out")).unwrap(),
        "to-out\n"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.with_extension("err")).unwrap(),
        "to-err\n"
    );
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!("{} {NS}\n", bundle.id)
    );
    shim.shutdown();
}
