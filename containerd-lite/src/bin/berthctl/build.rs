//! `berthctl build`: builds an image from a Dockerfile through berthd's
//! Docker API (`POST /build`, the legacy builder's protocol) without the
//! docker CLI. The context directory is sent as a tar (what
//! `.dockerignore` excludes is left out, as the docker CLI leaves it out,
//! except the Dockerfile and `.dockerignore` themselves); the build's
//! lines are printed as they come.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berthd::build::dockerfile::IgnoreRules;
use berthd::config::DEFAULT_DOCKER_ADDRESS;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncReadExt;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context: a directory holding the Dockerfile and the files it copies
    context: PathBuf,
    /// Names to tag the image with (name:tag)
    #[arg(short, long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile, relative to the context (default: Dockerfile)
    #[arg(short, long = "file")]
    file: Option<String>,
    /// Build arguments (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Labels for the image (KEY=VALUE)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Build up to this stage
    #[arg(long)]
    target: Option<String>,
    /// Do not use the build cache
    #[arg(long)]
    no_cache: bool,
    /// Pull the base images even when they are here
    #[arg(long)]
    pull: bool,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// The network RUN steps use (default: berthd's bridge)
    #[arg(long)]
    network: Option<String>,
    /// berthd's Docker API socket
    #[arg(long, env = "BERTH_DOCKER_ADDRESS", default_value = DEFAULT_DOCKER_ADDRESS)]
    docker_address: PathBuf,
}

/// Runs the build; the exit code is 0, or the failed command's code (1
/// for any other failure).
pub async fn build(args: BuildArgs) -> Result<ExitCode, String> {
    let query = query(&args)?;
    let context = args.context.clone();
    let dockerfile = args.file.clone().unwrap_or_else(|| "Dockerfile".to_owned());
    let archive = tokio::task::spawn_blocking(move || archive_context(&context, &dockerfile))
        .await
        .map_err(|err| format!("packing the context: {err}"))??;
    let stream = tokio::net::UnixStream::connect(&args.docker_address)
        .await
        .map_err(|err| format!("connecting to {}: {err}", args.docker_address.display()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| format!("talking to berthd: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let file = tokio::fs::File::from_std(archive);
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(buf))), file))
            }
            Err(err) => Some((Err(err), file)),
        }
    });
    let request = hyper::Request::post(format!("/build?{query}"))
        .header("Host", "berthd")
        .header("Content-Type", "application/x-tar")
        .body(StreamBody::new(chunks))
        .map_err(|err| format!("building the request: {err}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("sending the build: {err}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map_err(|err| format!("reading berthd's answer: {err}"))?
            .to_bytes();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(message);
    }
    let mut pending = Vec::new();
    let mut outcome = Outcome::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| format!("reading the build's progress: {err}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            outcome.show(&line);
        }
    }
    if !pending.is_empty() {
        outcome.show(&pending);
    }
    match outcome.error {
        Some((message, code)) => {
            eprintln!("{message}");
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What the build's lines said.
#[derive(Debug, Default)]
struct Outcome {
    error: Option<(String, i64)>,
}

impl Outcome {
    /// Prints one JSON line of the build's progress.
    fn show(&mut self, line: &[u8]) {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        if let Some(text) = message["stream"].as_str() {
            print!("{text}");
        }
        if let Some(error) = message["error"].as_str() {
            let code = message["errorDetail"]["code"].as_i64().unwrap_or(1);
            self.error = Some((error.to_owned(), code));
        }
    }
}

/// The `/build` query for `args`.
fn query(args: &BuildArgs) -> Result<String, String> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for tag in &args.tags {
        query.append_pair("t", tag);
    }
    if let Some(file) = &args.file {
        query.append_pair("dockerfile", file);
    }
    let mut build_args = BTreeMap::new();
    for arg in &args.build_args {
        match arg.split_once('=') {
            Some((key, value)) => build_args.insert(key.to_owned(), Some(value.to_owned())),
            None => build_args.insert(arg.clone(), std::env::var(arg).ok()),
        };
    }
    if !build_args.is_empty() {
        query.append_pair(
            "buildargs",
            &serde_json::to_string(&build_args).unwrap_or_default(),
        );
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        labels.insert(key.to_owned(), value.to_owned());
    }
    if !labels.is_empty() {
        query.append_pair(
            "labels",
            &serde_json::to_string(&labels).unwrap_or_default(),
        );
    }
    if let Some(target) = &args.target {
        query.append_pair("target", target);
    }
    if let Some(network) = &args.network {
        query.append_pair("networkmode", network);
    }
    for (flag, key) in [
        (args.no_cache, "nocache"),
        (args.pull, "pull"),
        (args.quiet, "q"),
    ] {
        if flag {
            query.append_pair(key, "1");
        }
    }
    query.append_pair("rm", "1");
    Ok(query.finish())
}

/// The context directory as a tar in a temporary file, without what its
/// `.dockerignore` excludes (but with the Dockerfile and the ignore file).
fn archive_context(context: &Path, dockerfile: &str) -> Result<std::fs::File, String> {
    if !context.is_dir() {
        return Err(format!("{}: not a directory", context.display()));
    }
    let rules = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(text) => IgnoreRules::parse(&text).map_err(|err| format!(".dockerignore: {err}"))?,
        Err(_) => IgnoreRules::default(),
    };
    let file = tempfile::tempfile().map_err(|err| format!("a temporary file: {err}"))?;
    let mut builder = tar::Builder::new(file);
    builder.follow_symlinks(false);
    let keep = [dockerfile.trim_start_matches("./"), ".dockerignore"];
    let walker = walkdir::WalkDir::new(context)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let Ok(relative) = entry.path().strip_prefix(context) else {
                return false;
            };
            let relative = relative.to_string_lossy();
            if keep.contains(&relative.as_ref()) || !rules.is_excluded(&relative) {
                return true;
            }
            entry.file_type().is_dir() && rules.may_contain_included(&relative)
        });
    for entry in walker {
        let entry = entry.map_err(|err| format!("reading the context: {err}"))?;
        let relative = entry
            .path()
            .strip_prefix(context)
            .map_err(|err| format!("reading the context: {err}"))?;
        let excluded = rules.is_excluded(&relative.to_string_lossy())
            && !keep.contains(&relative.to_string_lossy().as_ref());
        if excluded && !entry.file_type().is_dir() {
            continue;
        }
        builder
            .append_path_with_name(entry.path(), relative)
            .map_err(|err| format!("packing {}: {err}", relative.display()))?;
    }
    let mut file = builder
        .into_inner()
        .map_err(|err| format!("packing the context: {err}"))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|err| format!("packing the context: {err}"))?;
    Ok(file)
}
