//! Runs a parsed Dockerfile, step by step, as dockerd's legacy builder
//! does: every instruction after a FROM makes a new image from the
//! previous one (a layer for RUN, COPY and ADD; only a config change for
//! the rest), found in the build cache when the same step was made
//! before, and printed as `Step N/M : ...` then ` ---> <id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::cache;
use super::context::Context;
use super::copy::{self, CopySpec};
use super::download;
use super::image::{commit_snapshot, strings, write_image, BaseImage, NewLayer};
use super::output::Output;
use super::run::{self, short, RunFailure, RunSpec};
use super::BuildOptions;
use crate::build::dockerfile::{
    self, ArgDecl, Command, CopyArgs, Dockerfile, Healthcheck, Instruction, InstructionKind,
};
use crate::content::Descriptor;
use crate::docker::images::records::Records;
use crate::docker::reference::ImageRef;
use crate::docker::{Frontend, NAMESPACE};
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::oci::user::UserDb;
use crate::snapshots::mount::TempMount;
use crate::transfer::lease::TransferLease;
use crate::{Error, ErrorKind, Result};

/// Build arguments every build accepts without an ARG (proxies).
const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The shell RUN, CMD and ENTRYPOINT use in shell form unless SHELL says.
const DEFAULT_SHELL: &[&str] = &["/bin/sh", "-c"];

/// Why a build stopped.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// A RUN's exit code.
    pub code: Option<i64>,
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure {
            message: err.message,
            code: None,
        }
    }
}

type StepResult<T = ()> = std::result::Result<T, Failure>;

/// One stage's state while it is built.
struct Stage {
    image: BaseImage,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, String>,
}

impl Stage {
    /// A variable as expansion sees it: ENV first, then ARG.
    fn lookup(&self, name: &str) -> Option<String> {
        env_of(&self.image)
            .iter()
            .rev()
            .find_map(|var| {
                let (key, value) = var.split_once('=').unwrap_or((var, ""));
                (key == name).then(|| value.to_owned())
            })
            .or_else(|| self.args.get(name).cloned())
    }
}

/// The image's `Env` list.
fn env_of(image: &BaseImage) -> Vec<String> {
    strings(image.run_config().get("Env"))
}

/// One build.
pub struct Builder {
    frontend: Frontend,
    out: Output,
    options: BuildOptions,
    context: Arc<Context>,
    lease: Arc<TransferLease>,
    escape: char,
    step: usize,
    total: usize,
    /// Finished stages: their names (lowercase) and images.
    stages: Vec<(Option<String>, BaseImage)>,
    /// Build arguments some ARG (or a predefined one) used.
    consumed: BTreeSet<String>,
    /// The values of the ARGs before the first FROM: what FROM sees, and
    /// what an ARG of the same name without a default takes in a stage.
    meta_args: BTreeMap<String, String>,
}

impl Builder {
    pub fn new(
        frontend: Frontend,
        out: Output,
        options: BuildOptions,
        context: Context,
        lease: TransferLease,
        escape: char,
    ) -> Builder {
        Builder {
            frontend,
            out,
            options,
            context: Arc::new(context),
            lease: Arc::new(lease),
            escape,
            step: 0,
            total: 0,
            stages: Vec::new(),
            consumed: BTreeSet::new(),
            meta_args: BTreeMap::new(),
        }
    }

    /// Ends the build: releases its lease and removes its context (off
    /// the async threads; both touch the disk).
    pub async fn finish(self) {
        let Builder { lease, context, .. } = self;
        let _ = super::run_blocking(move || {
            if let Ok(lease) = Arc::try_unwrap(lease) {
                lease.release();
            }
            drop(context);
            Ok(())
        })
        .await;
    }

    /// Builds `file` and tags the result; returns the image ID.
    pub async fn build(&mut self, file: Dockerfile) -> StepResult<String> {
        let last = match &self.options.target {
            Some(target) => file
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(target.to_lowercase().as_str()))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "failed to reach build target {target} in Dockerfile"
                    ))
                })?,
            None => file
                .stages
                .len()
                .checked_sub(1)
                .ok_or_else(|| Error::invalid("the Dockerfile has no build stage"))?,
        };
        let stages = &file.stages[..=last];
        self.total = stages
            .iter()
            .map(|s| 1 + s.instructions.len())
            .sum::<usize>()
            + usize::from(!self.options.labels.is_empty());
        self.meta_args = self.evaluate_meta_args(&file.meta_args)?;
        let meta_args = self.meta_args.clone();
        let mut result = None;
        for (index, stage) in stages.iter().enumerate() {
            let mut state = self.from(stage, &meta_args).await?;
            for instruction in &stage.instructions {
                if self.out.is_closed() {
                    return Err(Error::unavailable("the client went away: build cancelled").into());
                }
                self.step += 1;
                self.out.step(format!(
                    "Step {}/{} : {}\n",
                    self.step, self.total, instruction.original
                ));
                self.dispatch(&mut state, instruction).await?;
            }
            if index == last && !self.options.labels.is_empty() {
                self.step += 1;
                let labels: Vec<(String, String)> = self
                    .options
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let text = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.out.step(format!(
                    "Step {}/{} : LABEL {text}\n",
                    self.step, self.total
                ));
                self.set_labels(&mut state, labels).await?;
            }
            self.stages.push((stage.name.clone(), state.image.clone()));
            result = Some(state.image);
        }
        self.warn_unused_args();
        let image = result.ok_or_else(|| Error::invalid("the Dockerfile has no build stage"))?;
        let (Some(id), Some(manifest)) = (image.id.as_ref(), image.manifest.clone()) else {
            return Err(Error::invalid("the build made no image (only FROM scratch)").into());
        };
        let id = id.to_string();
        self.tag(&id, manifest).await?;
        Ok(id)
    }

    /// The values of the ARGs before the first FROM.
    fn evaluate_meta_args(&mut self, decls: &[ArgDecl]) -> StepResult<BTreeMap<String, String>> {
        let mut values = BTreeMap::new();
        for decl in decls {
            let lookup = |name: &str| values.get(name).cloned();
            let value = self.arg_value(decl, &lookup)?;
            if let Some(value) = value {
                values.insert(decl.name.clone(), value);
            }
        }
        Ok(values)
    }

    /// An ARG's value: the build argument, else its expanded default.
    fn arg_value(
        &mut self,
        decl: &ArgDecl,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> StepResult<Option<String>> {
        if let Some(given) = self.options.build_args.get(&decl.name) {
            self.consumed.insert(decl.name.clone());
            if let Some(given) = given {
                return Ok(Some(given.clone()));
            }
        }
        match &decl.default {
            Some(default) => Ok(Some(self.expand(default, lookup)?)),
            None => Ok(self.meta_args.get(&decl.name).cloned()),
        }
    }

    fn expand(&self, word: &str, lookup: &dyn Fn(&str) -> Option<String>) -> StepResult<String> {
        dockerfile::expand_word(word, self.escape, lookup).map_err(|err| Failure {
            message: err.to_string(),
            code: None,
        })
    }

    fn expand_in(&self, state: &Stage, word: &str) -> StepResult<String> {
        self.expand(word, &|name: &str| state.lookup(name))
    }

    /// FROM: the stage's base image (a previous stage, scratch, or an
    /// image, pulled when missing or when the build asks to), and its
    /// ONBUILD triggers.
    async fn from(
        &mut self,
        stage: &dockerfile::Stage,
        meta_args: &BTreeMap<String, String>,
    ) -> StepResult<Stage> {
        self.step += 1;
        self.out.step(format!(
            "Step {}/{} : {}\n",
            self.step, self.total, stage.original
        ));
        let lookup = |name: &str| meta_args.get(name).cloned();
        let base = self.expand(&stage.base, &lookup)?;
        if let Some(platform) = &stage.platform {
            let text = self.expand(platform, &lookup)?;
            let host = crate::registry::Platform::host();
            let wanted = crate::registry::Platform::parse(&text)?;
            if wanted.os != host.os || wanted.architecture != host.architecture {
                return Err(Error::unimplemented(format!(
                    "FROM --platform={text}: berthd builds for {}/{} only",
                    host.os, host.architecture
                ))
                .into());
            }
        }
        let image = if let Some((_, image)) = self
            .stages
            .iter()
            .rev()
            .find(|(name, _)| name.as_deref() == Some(base.to_lowercase().as_str()))
        {
            image.clone()
        } else if base == "scratch" {
            BaseImage::scratch()
        } else {
            self.image(&base, self.options.pull).await?
        };
        let triggers = strings(image.run_config().get("OnBuild"));
        let mut state = Stage {
            image,
            args: BTreeMap::new(),
        };
        self.out
            .step(format!(" ---> {}\n", short(&state.image.shown_id())));
        if !triggers.is_empty() {
            self.out.step(format!(
                "# Executing {} build trigger{}\n",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ));
            // The triggers run once, here; the new image does not keep them.
            state.image.update_run_config(|run| {
                run.remove("OnBuild");
            });
            for trigger in &triggers {
                let parsed = dockerfile::parse(&format!("FROM scratch\n{trigger}\n"))
                    .map_err(|err| Error::invalid(format!("ONBUILD trigger {trigger:?}: {err}")))?;
                for stage in &parsed.stages {
                    for instruction in &stage.instructions {
                        self.dispatch(&mut state, instruction).await?;
                    }
                }
            }
        }
        Ok(state)
    }

    /// The image `text` names, pulled if it is not here (or if `pull`).
    async fn image(&self, text: &str, pull: bool) -> StepResult<BaseImage> {
        let catalog = self.frontend.catalog.clone();
        let lookup = text.to_owned();
        let found = super::run_blocking(move || catalog.find(&lookup)).await;
        let image = match found {
            Ok(image) if !pull => image,
            Err(err) if err.kind != ErrorKind::NotFound => return Err(err.into()),
            _ => {
                self.pull(text).await?;
                let catalog = self.frontend.catalog.clone();
                let lookup = text.to_owned();
                super::run_blocking(move || catalog.find(&lookup)).await?
            }
        };
        let backend = self.frontend.backend.clone();
        Ok(super::run_blocking(move || BaseImage::of(&backend, &image)).await?)
    }

    /// Pulls `text` from its registry.
    async fn pull(&self, text: &str) -> StepResult {
        let reference = ImageRef::parse(text)?;
        self.out.step(format!("Pulling {}\n", reference.familiar()));
        let name = reference.name();
        let snapshotter = self
            .frontend
            .backend
            .snapshotters
            .get(DEFAULT_SNAPSHOTTER)?;
        let options = crate::transfer::PullOptions {
            platform: crate::registry::Platform::host(),
            insecure: crate::docker::images::pull::is_insecure(reference.registry()),
            credentials: Default::default(),
            cancel: Default::default(),
        };
        let frontend = self.frontend.clone();
        let pulled = crate::docker::images::pull::run_transfer(move || async move {
            let backend = frontend.backend.clone();
            let lookup = name.clone();
            let previous =
                super::run_blocking(move || Records::new(&backend).target_of(&lookup)).await?;
            let progress: crate::transfer::ProgressFn = Arc::new(|_| {});
            let pulled = frontend
                .transfers
                .pull(NAMESPACE, &name, snapshotter, &options, progress)
                .await;
            frontend.backend.gc.schedule();
            let pulled = pulled?;
            let backend = frontend.backend.clone();
            super::run_blocking(move || {
                Records::new(&backend).moved(&pulled.name, previous.as_ref())
            })
            .await
        })
        .await;
        pulled
            .map_err(|err| Failure::from(err.context(format!("pulling {}", reference.familiar()))))
    }

    /// Runs one instruction on `state`.
    async fn dispatch(&mut self, state: &mut Stage, instruction: &Instruction) -> StepResult {
        match &instruction.kind {
            InstructionKind::Run(command) => self.run(state, command).await,
            InstructionKind::Copy(args) => self.copy(state, args, "COPY").await,
            InstructionKind::Add(args) => self.copy(state, args, "ADD").await,
            InstructionKind::Env(pairs) => {
                let mut expanded = Vec::new();
                for (key, value) in pairs {
                    // Each pair sees the ones before it.
                    let value = self.expand(value, &|name: &str| {
                        expanded
                            .iter()
                            .rev()
                            .find_map(|(k, v): &(String, String)| (k == name).then(|| v.clone()))
                            .or_else(|| state.lookup(name))
                    })?;
                    expanded.push((key.clone(), value));
                }
                let shown = expanded
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.config_step(state, format!("ENV {shown}"), move |run| {
                    let mut env = strings(run.get("Env"));
                    for (key, value) in &expanded {
                        env.retain(|var| var.split('=').next() != Some(key.as_str()));
                        env.push(format!("{key}={value}"));
                    }
                    run.insert("Env".into(), json!(env));
                })
                .await
            }
            InstructionKind::Label(pairs) => {
                let mut expanded = Vec::new();
                for (key, value) in pairs {
                    expanded.push((self.expand_in(state, key)?, self.expand_in(state, value)?));
                }
                self.set_labels(state, expanded).await
            }
            InstructionKind::Arg(decls) => {
                let mut shown = Vec::new();
                for decl in decls {
                    let value = self.arg_value(decl, &|name: &str| state.lookup(name))?;
                    if PREDEFINED_ARGS.contains(&decl.name.as_str()) {
                        self.consumed.insert(decl.name.clone());
                    }
                    shown.push(match &value {
                        Some(value) => format!("{}={value}", decl.name),
                        None => decl.name.clone(),
                    });
                    match value {
                        Some(value) => state.args.insert(decl.name.clone(), value),
                        None => state.args.remove(&decl.name),
                    };
                }
                self.config_step(state, format!("ARG {}", shown.join(" ")), |_| {})
                    .await
            }
            InstructionKind::Workdir(dir) => {
                let dir = self.expand_in(state, dir)?;
                let current = state
                    .image
                    .run_config()
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_owned();
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", current.trim_end_matches('/'))
                };
                self.workdir(state, dir).await
            }
            InstructionKind::User(user) => {
                let user = self.expand_in(state, user)?;
                self.config_step(state, format!("USER {user}"), move |run| {
                    run.insert("User".into(), json!(user));
                })
                .await
            }
            InstructionKind::Cmd(command) => {
                let argv = self.command_argv(state, command);
                self.config_step(state, format!("CMD {}", json!(argv)), move |run| {
                    run.insert("Cmd".into(), json!(argv));
                })
                .await
            }
            InstructionKind::Entrypoint(command) => {
                let argv = self.command_argv(state, command);
                self.config_step(state, format!("ENTRYPOINT {}", json!(argv)), move |run| {
                    run.insert("Entrypoint".into(), json!(argv));
                    // As dockerd: a new entrypoint drops the base's command.
                    run.insert("Cmd".into(), Value::Null);
                })
                .await
            }
            InstructionKind::Expose(ports) => {
                let mut expanded = Vec::new();
                for port in ports {
                    let port = self.expand_in(state, port)?;
                    let port = if port.contains('/') {
                        port.to_lowercase()
                    } else {
                        format!("{port}/tcp")
                    };
                    check_port(&port)?;
                    expanded.push(port);
                }
                let shown = format!("EXPOSE {}", expanded.join(" "));
                self.config_step(state, shown, move |run| {
                    set_entries(
                        run,
                        "ExposedPorts",
                        expanded.into_iter().map(|p| (p, json!({}))),
                    );
                })
                .await
            }
            InstructionKind::Volume(paths) => {
                let mut expanded = Vec::new();
                for path in paths {
                    let path = self.expand_in(state, path)?;
                    if path.trim().is_empty() {
                        return Err(
                            Error::invalid("VOLUME specified can not be an empty string").into(),
                        );
                    }
                    expanded.push(path);
                }
                let shown = format!("VOLUME {}", json!(expanded));
                self.config_step(state, shown, move |run| {
                    set_entries(run, "Volumes", expanded.into_iter().map(|p| (p, json!({}))));
                })
                .await
            }
            InstructionKind::StopSignal(signal) => {
                let signal = self.expand_in(state, signal)?;
                crate::docker::containers::lifecycle::parse_signal(&signal)?;
                self.config_step(state, format!("STOPSIGNAL {signal}"), move |run| {
                    run.insert("StopSignal".into(), json!(signal));
                })
                .await
            }
            InstructionKind::Shell(shell) => {
                let shell = shell.clone();
                self.config_step(state, format!("SHELL {}", json!(shell)), move |run| {
                    run.insert("Shell".into(), json!(shell));
                })
                .await
            }
            InstructionKind::Healthcheck(check) => {
                let value = healthcheck(check);
                self.config_step(state, format!("HEALTHCHECK {value}"), move |run| {
                    run.insert("Healthcheck".into(), value);
                })
                .await
            }
            InstructionKind::Onbuild(trigger) => {
                let text = trigger.original.clone();
                self.config_step(state, format!("ONBUILD {text}"), move |run| {
                    let mut triggers = strings(run.get("OnBuild"));
                    triggers.push(text);
                    run.insert("OnBuild".into(), json!(triggers));
                })
                .await
            }
            InstructionKind::Maintainer(author) => {
                let author = self.expand_in(state, author)?;
                let shown = format!("MAINTAINER {author}");
                state.image.config["author"] = json!(author);
                self.config_step(state, shown, |_| {}).await
            }
        }
    }

    /// The argv of a CMD or ENTRYPOINT (shell form through the shell).
    fn command_argv(&self, state: &Stage, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(argv) => argv.clone(),
            Command::Shell(text) => {
                let mut argv = self.shell(state);
                argv.push(text.clone());
                argv
            }
        }
    }

    /// The shell of the stage (SHELL, else `/bin/sh -c`).
    fn shell(&self, state: &Stage) -> Vec<String> {
        let shell = strings(state.image.run_config().get("Shell"));
        if shell.is_empty() {
            DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            shell
        }
    }

    /// A LABEL step (from the Dockerfile or `--label`).
    async fn set_labels(&mut self, state: &mut Stage, labels: Vec<(String, String)>) -> StepResult {
        let shown = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.config_step(state, format!("LABEL {shown}"), move |run| {
            set_entries(
                run,
                "Labels",
                labels.into_iter().map(|(k, v)| (k, json!(v))),
            );
        })
        .await
    }

    /// A step that only changes the run configuration: a new image with
    /// the same layers (or the cached one).
    async fn config_step(
        &mut self,
        state: &mut Stage,
        shown: String,
        change: impl FnOnce(&mut Map<String, Value>),
    ) -> StepResult {
        let created_by = format!("/bin/sh -c #(nop)  {shown}");
        let key = cache::key(state.image.id.as_ref(), &created_by);
        if self.cached(state, &key).await? {
            return Ok(());
        }
        let mut next = state.image.clone();
        next.update_run_config(change);
        self.commit(state, next, None, created_by, true, key).await
    }

    /// Uses the cached result of `key` if there is one.
    async fn cached(&mut self, state: &mut Stage, key: &str) -> StepResult<bool> {
        if self.options.no_cache {
            return Ok(false);
        }
        let frontend = self.frontend.clone();
        let lookup = key.to_owned();
        let hit = super::run_blocking(move || cache::lookup(&frontend, &lookup)).await?;
        let Some(hit) = hit else {
            return Ok(false);
        };
        self.out.step(" ---> Using cache\n");
        self.out.step(format!(" ---> {}\n", short(&hit.shown_id())));
        state.image = hit;
        Ok(true)
    }

    /// Writes the image `next` (with `layer` on top of `state`'s image),
    /// records it in the cache and makes it the stage's image.
    async fn commit(
        &mut self,
        state: &mut Stage,
        mut next: BaseImage,
        layer: Option<NewLayer>,
        created_by: String,
        empty_layer: bool,
        key: String,
    ) -> StepResult {
        let now = crate::docker::containers::record::now_rfc3339();
        next.config["created"] = json!(now);
        let mut entry = json!({ "created": now, "created_by": created_by });
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        match next.config.get_mut("history").and_then(Value::as_array_mut) {
            Some(history) => history.push(entry),
            None => next.config["history"] = json!([entry]),
        }
        let frontend = self.frontend.clone();
        let lease = self.lease.clone();
        let base = state.image.clone();
        let written = super::run_blocking(move || {
            let mut written = write_image(&frontend.backend, &lease, &base, layer, next.config)?;
            cache::store(&frontend, &key, &written.manifest)?;
            written.image.record = Some(key);
            Ok(written)
        })
        .await?;
        self.out
            .step(format!(" ---> {}\n", short(&written.image.shown_id())));
        state.image = written.image;
        Ok(())
    }

    /// RUN.
    async fn run(&mut self, state: &mut Stage, command: &Command) -> StepResult {
        let argv = self.command_argv(state, command);
        // The build arguments in scope reach the command's environment and
        // its cache key, not the image (as with dockerd).
        let env_names: BTreeSet<String> = env_of(&state.image)
            .iter()
            .map(|v| v.split('=').next().unwrap_or(v).to_owned())
            .collect();
        let args: Vec<String> = state
            .args
            .iter()
            .filter(|(name, _)| !env_names.contains(*name))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let joined = match command {
            Command::Shell(_) => argv.join(" "),
            Command::Exec(argv) => argv.join(" "),
        };
        let created_by = if args.is_empty() {
            joined
        } else {
            format!("|{} {} {joined}", args.len(), args.join(" "))
        };
        let key = cache::key(
            state.image.id.as_ref(),
            &format!("RUN {}\n{}", json!(argv), created_by),
        );
        if self.cached(state, &key).await? {
            return Ok(());
        }
        let mut env = env_of(&state.image);
        env.extend(args);
        let spec = RunSpec {
            argv: argv.clone(),
            env,
            network_mode: self.options.network_mode.clone(),
            remove: self.options.remove,
            remove_on_failure: self.options.remove || self.options.force_remove,
        };
        let layer = match run::run(&self.frontend, &self.out, &self.lease, &state.image, spec).await
        {
            Ok(layer) => layer,
            Err(RunFailure::Exited(code)) => {
                return Err(Failure {
                    message: format!(
                        "The command '{}' returned a non-zero code: {code}",
                        argv.join(" ")
                    ),
                    code: Some(code),
                })
            }
            Err(RunFailure::Error(err)) => return Err(err.into()),
        };
        let next = state.image.clone();
        self.commit(state, next, Some(layer), created_by, false, key)
            .await
    }

    /// COPY and ADD.
    async fn copy(
        &mut self,
        state: &mut Stage,
        args: &CopyArgs,
        instruction: &'static str,
    ) -> StepResult {
        let mut sources = Vec::new();
        let mut urls = Vec::new();
        for source in &args.sources {
            let source = self.expand_in(state, source)?;
            if source.starts_with("http://") || source.starts_with("https://") {
                if instruction != "ADD" {
                    return Err(Error::invalid(format!(
                        "COPY failed: source can't be a URL for COPY: {source}"
                    ))
                    .into());
                }
                if args.from.is_some() {
                    return Err(Error::invalid(format!(
                        "ADD failed: a URL source cannot be used with --from: {source}"
                    ))
                    .into());
                }
                urls.push(source);
            } else {
                sources.push(source);
            }
        }
        let dest = self.expand_in(state, &args.dest)?;
        let downloads = download::fetch(&urls, &super::scratch_dir(&self.frontend)).await?;
        let chown = match &args.chown {
            Some(chown) => Some(self.expand_in(state, chown)?),
            None => None,
        };
        let chmod = match &args.chmod {
            Some(chmod) => {
                let text = self.expand_in(state, chmod)?;
                Some(u32::from_str_radix(&text, 8).map_err(|_| {
                    Error::invalid(format!(
                        "invalid chmod parameter: {text}: must be an octal mode"
                    ))
                })?)
            }
            None => None,
        };
        let workdir = state
            .image
            .run_config()
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_owned();
        // Where the files come from: the context, or another stage's or
        // an image's filesystem (mounted read-only for the step).
        let from = match &args.from {
            Some(from) => Some(self.source_image(state, from).await?),
            None => None,
        };
        let frontend = self.frontend.clone();
        let lease = self.lease.clone();
        let context = self.context.clone();
        let base = state.image.clone();
        let from_for_copy = from.clone();
        let copy_spec = CopySpec {
            instruction,
            sources: sources.clone(),
            dest: dest.clone(),
            workdir,
            owner: (0, 0),
            chmod,
            unpack_archives: instruction == "ADD",
        };
        let prepared = super::run_blocking(move || {
            prepare_copy(
                &frontend,
                &lease,
                &context,
                from_for_copy.as_ref(),
                &copy_spec,
                downloads,
            )
        })
        .await;
        let prepared = prepared?;
        let shown_sources = &prepared.digest;
        let created_by = format!("/bin/sh -c #(nop) {instruction} {shown_sources} in {dest} ");
        let key = cache::key(
            state.image.id.as_ref(),
            &format!(
                "{created_by}\nchown={}\nchmod={:?}\nfrom={}",
                chown.clone().unwrap_or_default(),
                chmod,
                from.as_ref().map(BaseImage::shown_id).unwrap_or_default()
            ),
        );
        if self.cached(state, &key).await? {
            // Unmounting blocks: not on the async threads.
            super::run_blocking(move || {
                prepared.release();
                Ok(())
            })
            .await?;
            return Ok(());
        }
        let frontend = self.frontend.clone();
        let lease = self.lease.clone();
        let layer = super::run_blocking(move || {
            let result = copy_layer(&frontend, &lease, &base, &prepared, chown.as_deref());
            prepared.release();
            result
        })
        .await?;
        let next = state.image.clone();
        self.commit(state, next, Some(layer), created_by, false, key)
            .await
    }

    /// The image a `--from` names: a stage (by name or index) or an image.
    async fn source_image(&self, state: &Stage, from: &str) -> StepResult<BaseImage> {
        let from = self.expand_in(state, from)?;
        let lowered = from.to_lowercase();
        if let Some((_, image)) = self
            .stages
            .iter()
            .find(|(name, _)| name.as_deref() == Some(lowered.as_str()))
        {
            return Ok(image.clone());
        }
        if let Ok(index) = from.parse::<usize>() {
            return match self.stages.get(index) {
                Some((_, image)) => Ok(image.clone()),
                None => Err(Error::invalid(format!(
                    "invalid from flag value {from}: refers to a stage that is not built yet"
                ))
                .into()),
            };
        }
        self.image(&from, false).await
    }

    /// WORKDIR: the working directory is made when the image lacks it
    /// (a layer holding just that directory, as dockerd makes it), else
    /// only the config changes.
    async fn workdir(&mut self, state: &mut Stage, dir: String) -> StepResult {
        let created_by = format!("/bin/sh -c #(nop) WORKDIR {dir}");
        let key = cache::key(state.image.id.as_ref(), &created_by);
        if self.cached(state, &key).await? {
            return Ok(());
        }
        let frontend = self.frontend.clone();
        let lease = self.lease.clone();
        let base = state.image.clone();
        let made = dir.clone();
        let layer =
            super::run_blocking(move || make_workdir(&frontend, &lease, &base, &made)).await?;
        let mut next = state.image.clone();
        next.update_run_config(|run| {
            run.insert("WorkingDir".into(), json!(dir));
        });
        let empty_layer = layer.is_none();
        self.commit(state, next, layer, created_by, empty_layer, key)
            .await
    }

    /// Tags the built image with every `t`.
    async fn tag(&self, id: &str, manifest: Descriptor) -> StepResult {
        let frontend = self.frontend.clone();
        let tags = self.options.tags.clone();
        let tagged = super::run_blocking(move || {
            let records = Records::new(&frontend.backend);
            let mut shown = Vec::new();
            for tag in &tags {
                let reference = ImageRef::parse(tag)?;
                records.set(&reference.name(), &manifest)?;
                shown.push(reference.familiar());
            }
            Ok(shown)
        })
        .await?;
        self.out.built(id);
        self.out.step(format!("Successfully built {}\n", short(id)));
        for tag in tagged {
            self.out.step(format!("Successfully tagged {tag}\n"));
            self.frontend
                .journal
                .record(crate::docker::events::DockerEvent::image("tag", id, &tag));
        }
        Ok(())
    }

    /// Warns about build arguments no ARG used, as dockerd does.
    fn warn_unused_args(&self) {
        let unused: Vec<&String> = self
            .options
            .build_args
            .keys()
            .filter(|name| {
                !self.consumed.contains(*name) && !PREDEFINED_ARGS.contains(&name.as_str())
            })
            .collect();
        if !unused.is_empty() {
            let names = unused
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            self.out.step(format!(
                "[Warning] One or more build-args [{names}] were not consumed\n"
            ));
        }
    }
}

/// HEALTHCHECK as the config records it (durations in nanoseconds).
fn healthcheck(check: &Healthcheck) -> Value {
    match check {
        Healthcheck::None => json!({ "Test": ["NONE"] }),
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match test {
                Command::Exec(argv) => {
                    let mut all = vec!["CMD".to_owned()];
                    all.extend(argv.iter().cloned());
                    all
                }
                Command::Shell(text) => vec!["CMD-SHELL".to_owned(), text.clone()],
            };
            let nanos = |d: &Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as u64);
            let mut value = json!({ "Test": test });
            for (key, duration) in [
                ("Interval", interval),
                ("Timeout", timeout),
                ("StartPeriod", start_period),
                ("StartInterval", start_interval),
            ] {
                if duration.is_some() {
                    value[key] = json!(nanos(duration));
                }
            }
            if let Some(retries) = retries {
                value["Retries"] = json!(retries);
            }
            value
        }
    }
}

/// Sets `entries` in the object `key` of the run configuration (made an
/// object if it is not one).
fn set_entries(
    run: &mut Map<String, Value>,
    key: &str,
    entries: impl Iterator<Item = (String, Value)>,
) {
    let map = run.entry(key).or_insert_with(|| json!({}));
    if !map.is_object() {
        *map = json!({});
    }
    for (name, value) in entries {
        map[name.as_str()] = value;
    }
}

/// A port as EXPOSE takes it: `80/tcp`, `53/udp`, a range.
fn check_port(port: &str) -> Result<()> {
    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    let valid_number = |n: &str| n.parse::<u16>().is_ok_and(|n| n > 0);
    let numbers_ok = match number.split_once('-') {
        Some((start, end)) => valid_number(start) && valid_number(end),
        None => valid_number(number),
    };
    if !numbers_ok || !matches!(protocol, "tcp" | "udp" | "sctp") {
        return Err(Error::invalid(format!("Invalid containerPort: {port}")));
    }
    Ok(())
}

/// A COPY's sources, found and digested before the cache is asked.
pub(super) struct PreparedCopy {
    pub spec: CopySpec,
    pub digest: String,
    sources: Vec<copy::Source>,
    /// The read-only mount of a `--from` image, and its view snapshot.
    source_mount: Option<(TempMount, String)>,
    /// What ADD downloaded (removed with this).
    downloads: Option<download::Downloads>,
    frontend: Frontend,
}

impl PreparedCopy {
    fn source_root<'a>(&'a self, context: &'a Context) -> &'a std::path::Path {
        match &self.source_mount {
            Some((mount, _)) => mount.path(),
            None => context.root(),
        }
    }

    /// Unmounts and removes the source view, if any, and the downloads
    /// (what dropping does; by name where the step is done with them).
    fn release(self) {
        drop(self);
    }
}

impl Drop for PreparedCopy {
    /// Whatever path the step takes (a cache hit, an error while asking
    /// the cache), the source view and downloads do not outlive it.
    fn drop(&mut self) {
        self.downloads.take();
        if let Some((mount, key)) = self.source_mount.take() {
            if let Err(err) = mount.release() {
                tracing::warn!("unmounting a COPY --from source: {err}");
            }
            if let Ok(snapshotter) = self.frontend.backend.snapshotters.get(DEFAULT_SNAPSHOTTER) {
                if let Err(err) = snapshotter.remove(NAMESPACE, &key) {
                    tracing::warn!(key, "removing a COPY --from view: {err}");
                }
            }
        }
    }
}

/// Mounts a `--from` source (if any), finds the sources and digests them.
fn prepare_copy(
    frontend: &Frontend,
    lease: &TransferLease,
    context: &Context,
    from: Option<&BaseImage>,
    spec: &CopySpec,
    downloads: Option<download::Downloads>,
) -> Result<PreparedCopy> {
    let source_mount = match from {
        Some(image) => {
            let snapshotter = frontend.backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
            let key = format!("build-from-{}", uuid::Uuid::new_v4().simple());
            lease.hold_snapshot(snapshotter.name(), &key)?;
            let mounts = snapshotter.view(
                NAMESPACE,
                &key,
                image.chain_id().as_deref(),
                BTreeMap::new(),
            )?;
            match TempMount::new(&mounts) {
                Ok(mount) => Some((mount, key)),
                Err(err) => {
                    let _ = snapshotter.remove(NAMESPACE, &key);
                    return Err(err);
                }
            }
        }
        None => None,
    };
    let mut prepared = PreparedCopy {
        spec: spec.clone(),
        digest: String::new(),
        sources: Vec::new(),
        source_mount,
        downloads,
        frontend: frontend.clone(),
    };
    let what = if from.is_some() {
        "the source image"
    } else {
        "build context"
    };
    let found = copy::find_sources(
        prepared.source_root(context),
        &spec.sources,
        what,
        spec.instruction,
    )
    .and_then(|mut sources| {
        if let Some(downloads) = &prepared.downloads {
            sources.extend(downloads.sources.iter().cloned());
        }
        let digest = copy::content_digest(&sources)?;
        Ok((sources, digest))
    });
    match found {
        Ok((sources, digest)) => {
            prepared.sources = sources;
            prepared.digest = digest;
            Ok(prepared)
        }
        Err(err) => {
            prepared.release();
            Err(err)
        }
    }
}

/// Copies into a new snapshot on `base` and commits it as a layer.
fn copy_layer(
    frontend: &Frontend,
    lease: &TransferLease,
    base: &BaseImage,
    prepared: &PreparedCopy,
    chown: Option<&str>,
) -> Result<NewLayer> {
    let snapshotter = frontend.backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
    let key = format!("build-copy-{}", uuid::Uuid::new_v4().simple());
    lease.hold_snapshot(snapshotter.name(), &key)?;
    let mounts =
        snapshotter.prepare(NAMESPACE, &key, base.chain_id().as_deref(), BTreeMap::new())?;
    let copied = (|| -> Result<()> {
        let mounted = TempMount::new(&mounts)?;
        let result = (|| -> Result<()> {
            let owner = match chown {
                Some(chown) => resolve_owner(mounted.path(), chown)?,
                None => (0, 0),
            };
            let spec = CopySpec {
                owner,
                ..prepared.spec.clone()
            };
            copy::copy(mounted.path(), &prepared.sources, &spec)
        })();
        let released = mounted.release();
        result.and(released)
    })();
    if let Err(err) = copied {
        let _ = snapshotter.remove(NAMESPACE, &key);
        return Err(err);
    }
    match commit_snapshot(&frontend.backend, lease, base, &key) {
        Ok(layer) => Ok(layer),
        Err(err) => {
            let _ = snapshotter.remove(NAMESPACE, &key);
            Err(err)
        }
    }
}

/// Makes `dir` in a new snapshot on `base` and commits it as a layer;
/// `None` (and no snapshot left) when the directory is there already.
fn make_workdir(
    frontend: &Frontend,
    lease: &TransferLease,
    base: &BaseImage,
    dir: &str,
) -> Result<Option<NewLayer>> {
    let snapshotter = frontend.backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
    let key = format!("build-workdir-{}", uuid::Uuid::new_v4().simple());
    lease.hold_snapshot(snapshotter.name(), &key)?;
    let mounts =
        snapshotter.prepare(NAMESPACE, &key, base.chain_id().as_deref(), BTreeMap::new())?;
    let made = (|| -> Result<bool> {
        let mounted = TempMount::new(&mounts)?;
        let result = (|| -> Result<bool> {
            let path = copy::resolve_in(mounted.path(), dir, true)?;
            if path.is_dir() {
                return Ok(false);
            }
            std::fs::create_dir_all(&path)
                .map_err(|err| Error::invalid(format!("WORKDIR {dir}: {err}")))?;
            Ok(true)
        })();
        let released = mounted.release();
        result.and_then(|made| released.map(|()| made))
    })();
    match made {
        Ok(true) => match commit_snapshot(&frontend.backend, lease, base, &key) {
            Ok(layer) => Ok(Some(layer)),
            Err(err) => {
                let _ = snapshotter.remove(NAMESPACE, &key);
                Err(err)
            }
        },
        Ok(false) => {
            snapshotter.remove(NAMESPACE, &key)?;
            Ok(None)
        }
        Err(err) => {
            let _ = snapshotter.remove(NAMESPACE, &key);
            Err(err)
        }
    }
}

/// `--chown=user[:group]`: names are looked up in the image; a user
/// without a group uses the user's ID as the group ID, as docker does.
fn resolve_owner(rootfs: &std::path::Path, chown: &str) -> Result<(u32, u32)> {
    let (user, group) = match chown.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (chown, None),
    };
    let numeric = |s: &str| s.parse::<u32>().ok();
    let needs_db = numeric(user).is_none() || group.is_some_and(|g| numeric(g).is_none());
    let db = if needs_db {
        Some(UserDb::from_rootfs(rootfs).map_err(|err| {
            Error::invalid(format!(
                "unable to convert uid/gid chown string to host mapping: {err}"
            ))
        })?)
    } else {
        None
    };
    let uid = match numeric(user) {
        Some(uid) => uid,
        None => db
            .as_ref()
            .and_then(|db| db.users.iter().find(|u| u.name == user))
            .map(|u| u.uid)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unable to convert uid/gid chown string to host mapping: can't find uid for user {user}: no such user: {user}"
                ))
            })?,
    };
    let gid = match group {
        None => uid,
        Some(group) => match numeric(group) {
            Some(gid) => gid,
            None => db
                .as_ref()
                .and_then(|db| db.groups.iter().find(|g| g.name == group))
                .map(|g| g.gid)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unable to convert uid/gid chown string to host mapping: can't find gid for group {group}: no such group: {group}"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}
