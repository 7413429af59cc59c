//! `berthctl run`: an image's container, started and attached, as `ctr run`
//! does it through containerd's services.
//!
//! 1. Everything given on the command line is checked first (mounts, env,
//!    limits), so a typo costs nothing on the daemon.
//! 2. The image is resolved for this host ([`crate::resolve`]); a container
//!    of that id must not exist yet.
//! 3. Under a lease (so no collection takes it half-made), the snapshot
//!    `ID` is prepared on the image's top chain ID; the image's
//!    `/etc/passwd` and `/etc/group` are read through a read-only mount of
//!    it to resolve its user; the spec is built ([`berthd::oci`]) and the
//!    container created with it. The container now holds the snapshot and
//!    the lease goes.
//! 4. The task is created with stdio fifos ([`crate::stdio`]) or, with
//!    `-d`, none; Wait is subscribed before Start; then stdio is relayed,
//!    signals forwarded (or, with `-t`, the terminal is raw and its size
//!    follows SIGWINCH), and berthctl exits with the task's status.
//!
//! The task is deleted once it exited; `--rm` also deletes the container
//! and its snapshot. Any failure removes what this run created, and only
//! that: nothing is left behind, and a container that existed before is
//! never touched.

use std::collections::HashMap;
use std::process::ExitCode;

use berth_proto::containerd::services::containers::v1::container::Runtime;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::{
    Container, CreateContainerRequest, DeleteContainerRequest, GetContainerRequest,
};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
};
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::tasks::v1::{
    CloseIoRequest, CreateTaskRequest, DeleteTaskRequest, KillRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use berth_proto::containerd::types::Mount as WireMount;
use berthd::grpc::request::LEASE_HEADER;
use berthd::oci::{self, SpecBuilder, UserDb};
use berthd::snapshots::{Mount, TempMount};
use oci_spec::runtime::Spec;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::resolve::{resolve, ResolvedImage};
use crate::stdio::{relay_stdin, Fifos};
use crate::tty::RawMode;
use crate::{readable, Namespaced};

/// The runtime ctr asks for when told none.
const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";

/// How long the lease guarding a half-made container lives if berthctl
/// dies before deleting it (ctr's default).
const LEASE_EXPIRY: time::Duration = time::Duration::hours(24);

/// SIGKILL, for cleaning up a task that must not outlive a failed run.
const SIGKILL: u32 = 9;

/// `berthctl run [flags] IMAGE ID [COMMAND ARGS...]`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Delete the container and its snapshot once the task exits
    #[arg(long, conflicts_with = "detach")]
    rm: bool,
    /// Start the task and return; it gets no stdio
    #[arg(short, long)]
    detach: bool,
    /// Give the task a terminal, attached to this one (raw mode)
    #[arg(short, long, conflicts_with = "detach")]
    tty: bool,
    /// Set an environment variable (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Add a mount, in ctr's syntax (repeatable):
    /// type=bind,src=/host,dst=/container,options=rbind:ro
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Memory limit in bytes
    #[arg(long, value_name = "BYTES")]
    memory_limit: Option<u64>,
    /// CPU limit, in CPUs (0.5 is half of one)
    #[arg(long)]
    cpus: Option<f64>,
    /// Use the host's network (no network namespace)
    #[arg(long)]
    net_host: bool,
    /// Snapshotter holding the image's layers
    #[arg(long, default_value = "overlayfs")]
    snapshotter: String,
    /// Runtime name (a shim), as with ctr
    #[arg(long, default_value = DEFAULT_RUNTIME)]
    runtime: String,
    /// Image name, e.g. docker.io/library/busybox:latest
    image: String,
    /// Container id
    id: String,
    /// Command and arguments (default: the image's entrypoint and command)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The options of `run`, checked before anything is asked of berthd.
struct Checked {
    mounts: Vec<oci_spec::runtime::Mount>,
}

fn check(args: &RunArgs) -> Result<Checked, String> {
    for var in &args.env {
        oci::check_env(var).map_err(|e| e.to_string())?;
    }
    if let Some(cpus) = args.cpus {
        oci::cfs_quota(cpus).map_err(|e| e.to_string())?;
    }
    if let Some(bytes) = args.memory_limit {
        if bytes == 0 || i64::try_from(bytes).is_err() {
            return Err(format!("memory limit {bytes}: out of range"));
        }
    }
    let mounts = args
        .mounts
        .iter()
        .map(|text| oci::parse_mount(text).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok(Checked { mounts })
}

/// Runs `berthctl run`; the exit code is the task's (0 with `-d`).
pub(crate) async fn run(
    client: Namespaced,
    namespace: &str,
    args: RunArgs,
) -> Result<ExitCode, String> {
    let checked = check(&args)?;
    let image = resolve(&client, &args.image).await?;
    let existing = ContainersClient::new(client.clone())
        .get(GetContainerRequest {
            id: args.id.clone(),
        })
        .await;
    match existing {
        Ok(_) => return Err(format!("container {:?}: already exists", args.id)),
        Err(status) if status.code() == tonic::Code::NotFound => {}
        Err(status) => return Err(format!("container {:?}: {}", args.id, readable(status))),
    }

    let mut made = Made::new(client.clone(), &args);
    let lease = create_lease(&client).await?;
    let created = create_container(&mut made, &lease, namespace, &args, checked, &image).await;
    // The container record holds the snapshot now (or nothing is left).
    let released = delete_lease(&client, &lease).await;
    if let Err(err) = created.and(released) {
        made.undo().await;
        return Err(err);
    }

    let result = if args.detach {
        start_detached(&mut made, &args).await
    } else {
        attach(&mut made, &args).await
    };
    match result {
        Ok(code) => {
            if args.rm {
                let left = made.undo().await;
                if !left.is_empty() {
                    return Err(left.join("; "));
                }
            }
            Ok(code)
        }
        Err(err) => {
            made.undo().await;
            Err(err)
        }
    }
}

/// What this run created, undone on failure (or with `--rm`): the task,
/// the snapshot, then the container.
struct Made {
    client: Namespaced,
    id: String,
    snapshotter: String,
    snapshot: bool,
    container: bool,
    task: bool,
}

impl Made {
    fn new(client: Namespaced, args: &RunArgs) -> Made {
        Made {
            client,
            id: args.id.clone(),
            snapshotter: args.snapshotter.clone(),
            snapshot: false,
            container: false,
            task: false,
        }
    }

    /// Deletes the task, when it has exited, after a kill.
    async fn delete_task(&mut self) -> Result<(), String> {
        let mut tasks = TasksClient::new(self.client.clone());
        let deleted = tasks
            .delete(DeleteTaskRequest {
                container_id: self.id.clone(),
            })
            .await;
        if deleted.is_err() {
            // Still running (a failed start, an interrupted session): kill
            // it, wait for the exit, and delete again.
            let _ = tasks
                .kill(KillRequest {
                    container_id: self.id.clone(),
                    exec_id: String::new(),
                    signal: SIGKILL,
                    all: true,
                })
                .await;
            let _ = tasks
                .wait(WaitRequest {
                    container_id: self.id.clone(),
                    exec_id: String::new(),
                })
                .await;
            tasks
                .delete(DeleteTaskRequest {
                    container_id: self.id.clone(),
                })
                .await
                .map_err(|e| format!("deleting task {}: {}", self.id, readable(e)))?;
        }
        self.task = false;
        Ok(())
    }

    /// Removes what was made, newest first; returns what could not be.
    async fn undo(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        if self.task {
            if let Err(err) = self.delete_task().await {
                left.push(err);
            }
        }
        // The snapshot goes before the container, as containerd's client
        // does it: once the container is gone nothing holds the snapshot,
        // and the daemon's collector may take it first (then NotFound is
        // what we wanted).
        if self.snapshot {
            match SnapshotsClient::new(self.client.clone())
                .remove(RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: self.id.clone(),
                })
                .await
            {
                Ok(_) => self.snapshot = false,
                Err(e) if e.code() == tonic::Code::NotFound => self.snapshot = false,
                Err(e) => left.push(format!("removing snapshot {}: {}", self.id, readable(e))),
            }
        }
        if self.container {
            match ContainersClient::new(self.client.clone())
                .delete(DeleteContainerRequest {
                    id: self.id.clone(),
                })
                .await
            {
                Ok(_) => self.container = false,
                Err(e) => left.push(format!("deleting container {}: {}", self.id, readable(e))),
            }
        }
        for err in &left {
            eprintln!("berthctl: left behind: {err}");
        }
        left
    }
}

/// A lease that expires on its own should berthctl die holding it.
async fn create_lease(client: &Namespaced) -> Result<String, String> {
    let expiry = (time::OffsetDateTime::now_utc() + LEASE_EXPIRY)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("formatting the lease expiry: {e}"))?;
    let lease = LeasesClient::new(client.clone())
        .create(CreateLeaseRequest {
            id: String::new(),
            labels: HashMap::from([("containerd.io/gc.expire".to_owned(), expiry)]),
        })
        .await
        .map_err(|e| format!("creating a lease: {}", readable(e)))?
        .into_inner()
        .lease
        .ok_or("creating a lease: the daemon sent none")?;
    Ok(lease.id)
}

async fn delete_lease(client: &Namespaced, lease: &str) -> Result<(), String> {
    LeasesClient::new(client.clone())
        .delete(DeleteLeaseRequest {
            id: lease.to_owned(),
            sync: false,
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("deleting lease {lease}: {}", readable(e)))
}

fn with_lease<T>(message: T, lease: &str) -> Result<tonic::Request<T>, String> {
    let mut request = tonic::Request::new(message);
    let value = lease
        .parse()
        .map_err(|_| format!("lease {lease:?}: not a valid header"))?;
    request.metadata_mut().insert(LEASE_HEADER, value);
    Ok(request)
}

/// Prepares the snapshot, builds the spec and creates the container,
/// recording in `made` what exists.
async fn create_container(
    made: &mut Made,
    lease: &str,
    namespace: &str,
    args: &RunArgs,
    checked: Checked,
    image: &ResolvedImage,
) -> Result<(), String> {
    let mounts = SnapshotsClient::new(made.client.clone())
        .prepare(with_lease(
            PrepareSnapshotRequest {
                snapshotter: args.snapshotter.clone(),
                key: args.id.clone(),
                parent: image.chain_id.clone(),
                labels: HashMap::new(),
            },
            lease,
        )?)
        .await
        .map_err(|e| {
            if e.code() == tonic::Code::NotFound {
                format!(
                    "image {:?} is not unpacked for snapshotter {} ({}); pull or import it again",
                    image.name,
                    args.snapshotter,
                    readable(e)
                )
            } else {
                format!("preparing snapshot {}: {}", args.id, readable(e))
            }
        })?
        .into_inner()
        .mounts;
    made.snapshot = true;

    let users = tokio::task::spawn_blocking(move || read_users(&mounts))
        .await
        .map_err(|e| format!("reading the image's users: {e}"))??;
    let spec = build_spec(namespace, args, checked, image, &users)?;
    let labels = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default();
    ContainersClient::new(made.client.clone())
        .create(with_lease(
            CreateContainerRequest {
                container: Some(Container {
                    id: args.id.clone(),
                    labels,
                    image: image.name.clone(),
                    runtime: Some(Runtime {
                        name: args.runtime.clone(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: oci::SPEC_TYPE_URL.to_owned(),
                        value: oci::to_json(&spec).map_err(|e| e.to_string())?,
                    }),
                    snapshotter: args.snapshotter.clone(),
                    snapshot_key: args.id.clone(),
                    ..Default::default()
                }),
            },
            lease,
        )?)
        .await
        .map_err(|e| format!("creating container {}: {}", args.id, readable(e)))?;
    made.container = true;
    Ok(())
}

/// The user databases of a snapshot, read through a read-only mount.
fn read_users(mounts: &[WireMount]) -> Result<UserDb, String> {
    let mounts: Vec<Mount> = mounts.iter().map(readonly).collect();
    let mounted = TempMount::new(&mounts).map_err(|e| format!("mounting the rootfs: {e}"))?;
    let users = UserDb::from_rootfs(mounted.path()).map_err(|e| e.to_string());
    drop(mounted);
    users
}

/// A read-only form of a snapshot mount: an overlay's upper dir becomes
/// its top lower dir (and loses its work dir), anything else gets `ro`.
fn readonly(mount: &WireMount) -> Mount {
    let mut options: Vec<String> = mount.options.clone();
    if mount.r#type == "overlay" {
        let upper = options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir=").map(str::to_owned));
        if let Some(upper) = upper {
            options.retain(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="));
            for option in &mut options {
                if let Some(lower) = option.strip_prefix("lowerdir=") {
                    *option = format!("lowerdir={upper}:{lower}");
                }
            }
        }
    } else {
        options.retain(|o| o != "rw");
        options.push("ro".into());
    }
    Mount {
        r#type: mount.r#type.clone(),
        source: mount.source.clone(),
        target: (!mount.target.is_empty()).then(|| mount.target.clone()),
        options,
    }
}

fn build_spec(
    namespace: &str,
    args: &RunArgs,
    checked: Checked,
    image: &ResolvedImage,
    users: &UserDb,
) -> Result<Spec, String> {
    let text = |e: berthd::Error| e.to_string();
    let mut builder = SpecBuilder::new(namespace, &args.id).map_err(text)?;
    if let Some(config) = image.config.config() {
        builder = builder.image_config(config, users).map_err(text)?;
    } else {
        builder = builder.user(users.resolve("").map_err(text)?);
    }
    if !args.args.is_empty() {
        builder = builder.args(args.args.clone());
    }
    builder = builder.env(&args.env).map_err(text)?;
    for mount in checked.mounts {
        builder = builder.mount(mount);
    }
    if let Some(bytes) = args.memory_limit {
        builder = builder.memory_limit(bytes).map_err(text)?;
    }
    if let Some(cpus) = args.cpus {
        builder = builder.cpus(cpus).map_err(text)?;
    }
    if args.net_host {
        let hostname = nix::unistd::gethostname()
            .map_err(|e| format!("the host's name: {e}"))?
            .to_string_lossy()
            .into_owned();
        builder = builder.host_network(&hostname).map_err(text)?;
    }
    builder.terminal(args.tty).build().map_err(text)
}

/// `-d`: a task with no stdio, started; berthctl returns at once.
async fn start_detached(made: &mut Made, args: &RunArgs) -> Result<ExitCode, String> {
    let mut tasks = TasksClient::new(made.client.clone());
    create_task(made, &mut tasks, args, None).await?;
    start_task(&mut tasks, &args.id).await?;
    Ok(ExitCode::SUCCESS)
}

async fn create_task(
    made: &mut Made,
    tasks: &mut TasksClient<Namespaced>,
    args: &RunArgs,
    fifos: Option<&Fifos>,
) -> Result<(), String> {
    let path =
        |p: Option<&std::path::PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
    tasks
        .create(CreateTaskRequest {
            container_id: args.id.clone(),
            stdin: path(fifos.map(|f| &f.stdin)),
            stdout: path(fifos.map(|f| &f.stdout)),
            stderr: path(fifos.and_then(|f| f.stderr.as_ref())),
            terminal: args.tty,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating task {}: {}", args.id, readable(e)))?;
    made.task = true;
    Ok(())
}

async fn start_task(tasks: &mut TasksClient<Namespaced>, id: &str) -> Result<(), String> {
    tasks
        .start(StartRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("starting task {id}: {}", readable(e)))
}

/// The signals passed on to a task without a terminal.
const FORWARDED: [SignalKind; 6] = [
    SignalKind::interrupt(),
    SignalKind::terminate(),
    SignalKind::hangup(),
    SignalKind::quit(),
    SignalKind::user_defined1(),
    SignalKind::user_defined2(),
];

/// The signals berthctl receives, by number, as they come.
fn catch_signals(kinds: &[SignalKind]) -> Result<mpsc::Receiver<i32>, String> {
    let (sender, receiver) = mpsc::channel(16);
    for kind in kinds {
        let mut stream = signal(*kind).map_err(|e| format!("catching signals: {e}"))?;
        let sender = sender.clone();
        let number = kind.as_raw_value();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if sender.send(number).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(receiver)
}

async fn resize(tasks: &mut TasksClient<Namespaced>, id: &str, terminal: &RawMode) {
    if let Some((width, height)) = terminal.size() {
        // A resize racing with the task's exit may fail; that is harmless.
        let _ = tasks
            .resize_pty(ResizePtyRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                width,
                height,
            })
            .await;
    }
}

/// Runs the task attached: stdio relayed, signals forwarded or the
/// terminal raw, until it exits; then deletes it. Its exit status.
async fn attach(made: &mut Made, args: &RunArgs) -> Result<ExitCode, String> {
    let id = args.id.clone();
    let mut tasks = TasksClient::new(made.client.clone());
    let fifos = Fifos::new(&id, args.tty)?;
    let outputs = fifos.relay_outputs()?;
    if let Err(err) = create_task(made, &mut tasks, args, Some(&fifos)).await {
        outputs.abort();
        return Err(err);
    }
    let terminal = if args.tty {
        let terminal = RawMode::enable()?;
        resize(&mut tasks, &id, &terminal).await;
        Some(terminal)
    } else {
        None
    };
    let mut signals = if args.tty {
        catch_signals(&[SignalKind::window_change()])?
    } else {
        catch_signals(&FORWARDED)?
    };

    let mut waiter = TasksClient::new(made.client.clone());
    let wait_request = WaitRequest {
        container_id: id.clone(),
        exec_id: String::new(),
    };
    let mut wait = tokio::spawn(async move { waiter.wait(wait_request).await });
    start_task(&mut tasks, &id).await?;

    // At our end-of-file the fifo is closed and the shim told with CloseIO
    // (as ctr does: a shim may hold the fifo open itself); it passes on what
    // the fifo still holds, then ends the task's stdin.
    let mut stdin_copy = relay_stdin(fifos.open_stdin()?);
    let mut stdin_open = true;

    let exit_status = loop {
        tokio::select! {
            _ = &mut stdin_copy, if stdin_open => {
                stdin_open = false;
                let _ = tasks
                    .close_io(CloseIoRequest {
                        container_id: id.clone(),
                        exec_id: String::new(),
                        stdin: true,
                    })
                    .await;
            }
            waited = &mut wait => {
                let response = waited
                    .map_err(|e| format!("waiting for task {id}: {e}"))?
                    .map_err(|e| format!("waiting for task {id}: {}", readable(e)))?;
                break response.into_inner().exit_status;
            }
            Some(number) = signals.recv() => {
                match &terminal {
                    Some(terminal) => resize(&mut tasks, &id, terminal).await,
                    None => {
                        let _ = tasks
                            .kill(KillRequest {
                                container_id: id.clone(),
                                exec_id: String::new(),
                                signal: number.unsigned_abs(),
                                all: false,
                            })
                            .await;
                    }
                }
            }
        }
    };
    outputs.drained().await;
    drop(terminal);
    drop(fifos);
    made.delete_task().await?;
    Ok(ExitCode::from(
        u8::try_from(exit_status & 0xff).unwrap_or(u8::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r#type: &str, options: &[&str]) -> WireMount {
        WireMount {
            r#type: r#type.into(),
            source: r#type.into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_mounts_become_read_only() {
        let overlay = readonly(&wire(
            "overlay",
            &[
                "index=off",
                "workdir=/s/2/work",
                "upperdir=/s/2/fs",
                "lowerdir=/s/1/fs",
            ],
        ));
        assert_eq!(overlay.options, ["index=off", "lowerdir=/s/2/fs:/s/1/fs"]);
        assert_eq!(overlay.target, None);
        let bind = readonly(&wire("bind", &["rw", "rbind"]));
        assert_eq!(bind.options, ["rbind", "ro"]);
        assert!(bind.is_readonly());
        // A view (no upper dir) is read-only by construction: unchanged.
        let view = readonly(&wire("overlay", &["lowerdir=/s/2/fs:/s/1/fs"]));
        assert_eq!(view.options, ["lowerdir=/s/2/fs:/s/1/fs"]);
    }

    #[test]
    fn flags_are_checked_before_anything_else() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let parse = |args: &[&str]| {
            let mut argv = vec!["run"];
            argv.extend(args);
            Cli::try_parse_from(argv).map(|cli| cli.run)
        };
        let args = parse(&["--env", "A=1", "img", "id", "sh", "-c", "echo -n x"]).unwrap();
        assert_eq!(args.args, ["sh", "-c", "echo -n x"]);
        assert_eq!(args.runtime, DEFAULT_RUNTIME);
        assert!(check(&args).is_ok());
        for (flags, says) in [
            (vec!["--env", "A"], "KEY=VALUE"),
            (vec!["--mount", "type=bind,dst=/x"], "absolute source"),
            (vec!["--cpus=-1"], "positive"),
            (
                vec!["--memory-limit", "18446744073709551615"],
                "out of range",
            ),
        ] {
            let mut argv = flags.clone();
            argv.extend(["img", "id"]);
            let err = check(&parse(&argv).unwrap()).err().unwrap();
            assert!(err.contains(says), "{flags:?}: {err}");
        }
        assert!(parse(&["-d", "--rm", "img", "id"]).is_err());
        assert!(parse(&["-d", "-t", "img", "id"]).is_err());
    }
}
