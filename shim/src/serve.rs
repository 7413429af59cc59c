//! Serving mode: the long-lived shim. It inherits its listening socket from
//! `start` as stdin, becomes a child subreaper, and serves the task API on a
//! single-threaded tokio runtime until containerd shuts it down.

use crate::container::Shared;
use crate::events::Publisher;
use crate::flags::Flags;
use crate::reaper::Reaper;
use crate::service::Service;
use anyhow::{Context, Result};
use containerd_shim_protos::shim_async::create_task;
use containerd_shim_protos::ttrpc::asynchronous::transport::Listener;
use containerd_shim_protos::ttrpc::asynchronous::Server;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// Events still queued get this long to reach containerd before exit.
const FLUSH_LIMIT: Duration = Duration::from_secs(3);

pub fn run(flags: &Flags) -> Result<()> {
    flags.require_identity()?;
    let bundle = std::env::current_dir().context("finding the bundle (working directory)")?;
    crate::log::init(&bundle, flags.debug);
    let listener = inherited_listener()?;
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(flags, listener));
    if let Err(e) = &result {
        crate::log::error(format!("{e:#}"));
    }
    // A relay may still sit in a blocking open of a fifo nobody will open
    // again; it must not keep the shim alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// `start` passes the bound socket as fd 0; take it and put /dev/null there.
fn inherited_listener() -> Result<UnixListener> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("taking the listening socket from stdin")?;
    let listener = UnixListener::from(fd);
    listener
        .local_addr()
        .context("stdin is not a listening unix socket (run through `start`)")?;
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    nix::unistd::dup2_stdin(null).context("replacing stdin")?;
    Ok(listener)
}

async fn serve(flags: &Flags, listener: UnixListener) -> Result<()> {
    let socket_path: Option<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(PathBuf::from));
    let reaper = Reaper::start().context("installing the SIGCHLD handler")?;
    let events = Publisher::start(std::env::var("TTRPC_ADDRESS").ok(), flags.namespace.clone());
    let shutdown = Arc::new(Notify::new());
    let service = Service::new(
        Shared {
            reaper,
            events: events.clone(),
            namespace: flags.namespace.clone(),
        },
        shutdown.clone(),
    );
    listener.set_nonblocking(true).context("socket mode")?;
    let listener =
        tokio::net::UnixListener::from_std(listener).context("registering the socket")?;
    let mut server = Server::new()
        .add_listener(Listener::from(listener))
        .register_service(create_task(Arc::new(service)));
    server.start().await.context("starting the ttrpc server")?;
    crate::log::info(format!("serving {} on {:?}", flags.id, socket_path));

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = shutdown.notified() => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Let the Shutdown reply go out, and queued events reach containerd.
    tokio::time::sleep(Duration::from_millis(20)).await;
    events.flush(FLUSH_LIMIT).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
