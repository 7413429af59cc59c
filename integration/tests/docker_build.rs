//! `docker build` (the legacy builder's protocol) on berthd with the real
//! docker CLIs: single- and multi-stage builds, COPY with .dockerignore
//! and --chown, ADD of a local archive, ARG/ENV substitution, ONBUILD, the
//! cache (hits on a second build, misses after a file changes, none with
//! --no-cache), a failing RUN, bad Dockerfiles and contexts; each image
//! is run and inspected, and nothing is left behind.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::fs;
use std::path::Path;

use docker_support::{Berthd, Cli};
use serde_json::Value;

const IMAGE: &str = "berth-busybox";

/// Writes `files` (path, contents) under a new dir in the daemon's temp dir.
fn context(daemon: &Berthd, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = daemon.dir().join("contexts").join(name);
    let _ = fs::remove_dir_all(&dir);
    for (path, contents) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
    dir
}

/// A name made of `cli`'s name that image names and paths accept.
fn slug(cli: &Cli) -> String {
    berth_integration::harness::slug(cli.name)
}

fn build(daemon: &Berthd, cli: &Cli, dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let dir = dir.to_string_lossy().into_owned();
    all.push(&dir);
    daemon.ok(cli, &all)
}

fn inspect(daemon: &Berthd, cli: &Cli, image: &str) -> Value {
    let text = daemon.ok(cli, &["image", "inspect", image]);
    serde_json::from_str::<Value>(&text).unwrap()[0].clone()
}

/// Removes the images and the build cache; then checks that only the
/// base image's snapshots are left.
fn clean_up(daemon: &Berthd, cli: &Cli, images: &[&str]) {
    for image in images {
        daemon.ok(cli, &["rmi", image]);
    }
    daemon.ok(cli, &["builder", "prune", "-f"]);
    assert_eq!(
        daemon.ok(cli, &["ps", "-aq"]).trim(),
        "",
        "no build containers left"
    );
    let listed = daemon.ok(cli, &["images", "-a", "-q"]);
    assert_eq!(
        listed.lines().count(),
        1,
        "{}: only the base image is left: {listed}",
        cli.name
    );
    assert_eq!(
        snapshots(daemon),
        1,
        "{}: only the base image's layer is left",
        cli.name
    );
}

/// The snapshots of docker's namespace.
fn snapshots(daemon: &Berthd) -> usize {
    let out = daemon.ctr(&["snapshots", "ls"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().skip(1).count()
}

#[test]
fn a_single_stage_build_runs_copies_and_is_cached() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    for cli in &clis {
        let name = cli.name;
        let slug = slug(cli);
        let dockerfile = format!(
            "# a comment\n\
             FROM {IMAGE}\n\
             ARG GREETING=hello\n\
             ENV APP=/app \\\n    NAME=\"berth build\"\n\
             WORKDIR $APP\n\
             COPY greeting.txt ./\n\
             COPY dir/ sub/\n\
             RUN echo \"$GREETING $NAME\" > out.txt && cat greeting.txt && echo to-stderr >&2\n\
             LABEL org.example.kind=test\n\
             EXPOSE 8080\n\
             CMD [\"cat\", \"/app/out.txt\"]\n"
        );
        let dir = context(
            &daemon,
            &slug,
            &[
                ("Dockerfile", &dockerfile),
                (".dockerignore", "*.log\n"),
                ("greeting.txt", "from the context\n"),
                ("ignored.log", "never copied\n"),
                ("dir/nested/file", "nested\n"),
            ],
        );
        let tag = format!("built-{slug}:1");
        let out = build(
            &daemon,
            cli,
            &dir,
            &["-t", &tag, "--build-arg", "GREETING=hi"],
        );
        assert!(
            out.contains("Step 1/10 : FROM berth-busybox"),
            "{name}: {out}"
        );
        assert!(
            out.contains("from the context"),
            "{name}: RUN output relayed: {out}"
        );
        assert!(out.contains("to-stderr"), "{name}: stderr relayed: {out}");
        assert!(out.contains("Successfully built "), "{name}: {out}");
        assert!(
            out.contains(&format!("Successfully tagged {tag}")),
            "{name}: {out}"
        );
        assert!(!out.contains("Using cache"), "{name}: {out}");

        assert_eq!(daemon.ok(cli, &["run", "--rm", &tag]), "hi berth build\n");
        let listing = daemon.ok(
            cli,
            &["run", "--rm", &tag, "ls", "-A", "/app", "/app/sub/nested"],
        );
        assert!(listing.contains("greeting.txt"), "{name}: {listing}");
        assert!(
            !listing.contains("ignored.log"),
            "{name}: .dockerignore: {listing}"
        );
        assert!(listing.contains("file"), "{name}: {listing}");
        let owner = daemon.ok(
            cli,
            &[
                "run",
                "--rm",
                &tag,
                "stat",
                "-c",
                "%u:%g",
                "/app/greeting.txt",
            ],
        );
        assert_eq!(owner.trim(), "0:0", "{name}");
        // The runtime's mount points are not part of the layers.
        let hosts = daemon.ok(
            cli,
            &["run", "--rm", "--entrypoint", "sh", &tag, "-c", "echo ok"],
        );
        assert_eq!(hosts, "ok\n");

        let image = inspect(&daemon, cli, &tag);
        let config = &image["Config"];
        assert_eq!(config["WorkingDir"], "/app", "{name}");
        let env: Vec<&str> = config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"APP=/app"), "{name}: {env:?}");
        assert!(env.contains(&"NAME=berth build"), "{name}: {env:?}");
        assert!(
            !env.iter().any(|v| v.starts_with("GREETING")),
            "{name}: ARG is not ENV"
        );
        assert_eq!(config["Labels"]["org.example.kind"], "test");
        assert!(
            config["ExposedPorts"]["8080/tcp"].is_object(),
            "{name}: {config}"
        );
        assert_eq!(config["Cmd"], serde_json::json!(["cat", "/app/out.txt"]));
        let history = daemon.ok(
            cli,
            &["history", "--no-trunc", "--format", "{{.CreatedBy}}", &tag],
        );
        let ours: Vec<&str> = history.lines().take(9).collect();
        assert!(
            ours[0].contains("CMD [\"cat\",\"/app/out.txt\"]"),
            "{name}: {history}"
        );
        assert!(
            ours.iter()
                .any(|l| l.contains("|1 GREETING=hi /bin/sh -c echo")),
            "{name}: {history}"
        );
        assert!(
            ours.iter().any(|l| l.contains("COPY file:")),
            "{name}: {history}"
        );

        // The same build again: every step after FROM from the cache.
        let again = build(
            &daemon,
            cli,
            &dir,
            &["-t", &tag, "--build-arg", "GREETING=hi"],
        );
        assert_eq!(again.matches("Using cache").count(), 9, "{name}: {again}");
        assert_eq!(inspect(&daemon, cli, &tag)["Id"], image["Id"], "{name}");

        // A changed file: the steps from its COPY on are made again.
        fs::write(dir.join("greeting.txt"), "changed\n").unwrap();
        let changed = build(
            &daemon,
            cli,
            &dir,
            &["-t", &tag, "--build-arg", "GREETING=hi"],
        );
        assert_eq!(
            changed.matches("Using cache").count(),
            3,
            "{name}: {changed}"
        );
        assert!(changed.contains("changed"), "{name}: {changed}");
        assert_ne!(inspect(&daemon, cli, &tag)["Id"], image["Id"], "{name}");

        // --no-cache: nothing from the cache.
        let fresh = build(&daemon, cli, &dir, &["--no-cache", "-q"]);
        assert!(
            fresh.trim().starts_with("sha256:"),
            "{name}: quiet prints the ID: {fresh}"
        );
        assert!(!fresh.contains("Step"), "{name}: {fresh}");

        let untagged = fresh.trim().to_owned();
        clean_up(&daemon, cli, &[&tag, &untagged]);
    }
}

#[test]
fn multi_stage_builds_copy_from_earlier_stages_and_stop_at_a_target() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    for cli in &clis {
        let name = cli.name;
        let slug = slug(cli);
        let dockerfile = format!(
            "ARG BASE={IMAGE}\n\
             FROM $BASE AS Builder\n\
             ARG BASE\n\
             RUN mkdir -p /out && echo built > /out/artifact && echo \"$BASE\" > /out/base && echo app:x:1234:1234::/:/bin/sh >> /etc/passwd\n\
             FROM scratch\n\
             COPY --from=builder /out/artifact /artifact\n\
             COPY --from=0 /bin/busybox /bin/busybox\n\
             COPY --from=0 /etc/passwd /etc/group /etc/\n\
             COPY --chown=app:1234 owned.txt /owned.txt\n\
             COPY --chown=55 owned.txt /numeric.txt\n\
             ENTRYPOINT [\"/bin/busybox\"]\n\
             CMD [\"cat\", \"/artifact\"]\n"
        );
        let dir = context(
            &daemon,
            &format!("multi-{slug}"),
            &[("Dockerfile", &dockerfile), ("owned.txt", "x")],
        );
        let tag = format!("multi-{slug}");
        let out = build(&daemon, cli, &dir, &["-t", &tag]);
        assert!(out.contains("Step 11/11 : CMD"), "{name}: {out}");
        assert_eq!(daemon.ok(cli, &["run", "--rm", &tag]), "built\n", "{name}");
        let owners = daemon.ok(
            cli,
            &[
                "run",
                "--rm",
                &tag,
                "stat",
                "-c",
                "%u:%g",
                "/owned.txt",
                "/numeric.txt",
            ],
        );
        assert_eq!(owners, "1234:1234\n55:55\n", "{name}");
        let image = inspect(&daemon, cli, &tag);
        assert_eq!(
            image["RootFS"]["Layers"].as_array().unwrap().len(),
            5,
            "{name}: FROM scratch + 5 COPY layers"
        );

        // --target builds up to the named stage (case-insensitively).
        let target = format!("target-{slug}");
        let out = build(&daemon, cli, &dir, &["-t", &target, "--target", "BUILDER"]);
        assert!(out.contains("Step 3/3 : RUN"), "{name}: {out}");
        assert_eq!(
            daemon.ok(cli, &["run", "--rm", &target, "cat", "/out/artifact"]),
            "built\n"
        );
        // An ARG without a default in a stage takes the value of the one
        // before FROM.
        assert_eq!(
            daemon.ok(cli, &["run", "--rm", &target, "cat", "/out/base"]),
            format!("{IMAGE}\n")
        );
        let err = daemon.fails(cli, &["build", "--target", "nope", &dir.to_string_lossy()]);
        assert!(
            err.contains("failed to reach build target nope"),
            "{name}: {err}"
        );

        clean_up(&daemon, cli, &[&tag, &target]);
    }
}

#[test]
fn add_unpacks_local_archives_and_onbuild_triggers_run_in_the_child() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    for cli in &clis {
        let name = cli.name;
        let slug = slug(cli);
        let dir = context(
            &daemon,
            &format!("add-{slug}"),
            &[("payload/a/b.txt", "in the archive\n")],
        );
        let status = std::process::Command::new("tar")
            .args(["-czf", "payload.tar.gz", "-C", "payload", "."])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        fs::remove_dir_all(dir.join("payload")).unwrap();
        let parent = format!("parent-{slug}");
        fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM {IMAGE}\n\
                 ADD payload.tar.gz /unpacked/\n\
                 COPY payload.tar.gz /kept/\n\
                 SHELL [\"/bin/sh\", \"-e\", \"-c\"]\n\
                 WORKDIR /deep/dir\n\
                 WORKDIR relative\n\
                 USER nobody\n\
                 STOPSIGNAL SIGUSR1\n\
                 HEALTHCHECK --interval=5s --retries=2 CMD true\n\
                 VOLUME /data\n\
                 ONBUILD RUN echo triggered > /tmp/onbuild\n"
            ),
        )
        .unwrap();
        build(&daemon, cli, &dir, &["-t", &parent]);
        let out = daemon.ok(cli, &["run", "--rm", &parent, "cat", "/unpacked/a/b.txt"]);
        assert_eq!(out, "in the archive\n", "{name}");
        let kept = daemon.ok(cli, &["run", "--rm", &parent, "ls", "/kept"]);
        assert_eq!(kept, "payload.tar.gz\n", "{name}: COPY does not unpack");
        // WORKDIR made the directory in the image (not only at run time).
        let made = daemon.ok(
            cli,
            &[
                "run",
                "--rm",
                "-w",
                "/",
                &parent,
                "ls",
                "-d",
                "/deep/dir/relative",
            ],
        );
        assert_eq!(made, "/deep/dir/relative\n", "{name}");
        let image = inspect(&daemon, cli, &parent);
        let config = &image["Config"];
        assert_eq!(config["WorkingDir"], "/deep/dir/relative");
        assert_eq!(config["User"], "nobody");
        assert_eq!(config["StopSignal"], "SIGUSR1");
        assert_eq!(config["Shell"], serde_json::json!(["/bin/sh", "-e", "-c"]));
        assert_eq!(
            config["Healthcheck"]["Test"],
            serde_json::json!(["CMD-SHELL", "true"])
        );
        assert_eq!(config["Healthcheck"]["Interval"], 5_000_000_000u64);
        assert_eq!(config["Healthcheck"]["Retries"], 2);
        assert!(config["Volumes"]["/data"].is_object(), "{name}: {config}");
        assert_eq!(
            config["OnBuild"],
            serde_json::json!(["RUN echo triggered > /tmp/onbuild"])
        );

        // A child image runs the trigger (as the parent's USER) and drops it.
        let child_dir = context(
            &daemon,
            &format!("child-{slug}"),
            &[("Dockerfile", &format!("FROM {parent}\n"))],
        );
        let child = format!("child-{slug}");
        let out = build(&daemon, cli, &child_dir, &["-t", &child]);
        assert!(out.contains("Executing 1 build trigger"), "{name}: {out}");
        assert_eq!(
            daemon.ok(cli, &["run", "--rm", &child, "cat", "/tmp/onbuild"]),
            "triggered\n"
        );
        assert!(inspect(&daemon, cli, &child)["Config"]["OnBuild"]
            .as_array()
            .is_none_or(|t| t.is_empty()));

        clean_up(&daemon, cli, &[&child, &parent]);
    }
}

#[test]
fn a_failing_run_and_bad_input_fail_with_docker_s_messages_and_leave_nothing() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    for cli in &clis {
        let name = cli.name;
        let slug = slug(cli);
        let failing = context(
            &daemon,
            &format!("fail-{slug}"),
            &[(
                "Dockerfile",
                &format!("FROM {IMAGE}\nRUN echo before-the-failure && exit 3\nRUN echo never\n"),
            )],
        );
        let out = daemon.docker(cli, &["build", &failing.to_string_lossy()]);
        assert!(!out.status.success(), "{name}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.contains("before-the-failure"), "{name}: {stdout}");
        assert!(!stdout.contains("never"), "{name}: {stdout}");
        assert!(
            stderr.contains("The command '/bin/sh -c echo before-the-failure && exit 3' returned a non-zero code: 3"),
            "{name}: {stderr}"
        );
        assert_eq!(
            daemon.ok(cli, &["ps", "-aq"]).trim(),
            "",
            "{name}: no container left"
        );

        let cases: &[BadCase] = &[
            (
                "unknown",
                &[("Dockerfile", "FROM scratch\nFOO bar\n")],
                "dockerfile parse error line 2: unknown instruction: FOO",
            ),
            (
                "empty",
                &[("Dockerfile", "# nothing\n")],
                "file with no instructions",
            ),
            (
                "nofrom",
                &[("Dockerfile", "RUN true\n")],
                "no build stage in current context",
            ),
            (
                "copyargs",
                &[("Dockerfile", "FROM scratch\nCOPY onlyone\n")],
                "COPY requires at least two arguments",
            ),
            (
                "missing",
                &[("Dockerfile", "FROM scratch\nCOPY missing.txt /\n")],
                "file not found in build context",
            ),
            (
                "glob",
                &[("Dockerfile", "FROM scratch\nCOPY *.none /\n")],
                "no source files were specified",
            ),
            (
                "escape",
                &[("Dockerfile", "FROM scratch\nCOPY ../../etc/passwd /\n")],
                "file not found in build context",
            ),
            (
                "noimage",
                &[("Dockerfile", "FROM localhost:1/none/such:tag\n")],
                "localhost:1/none/such",
            ),
            (
                "badexpose",
                &[("Dockerfile", "FROM scratch\nEXPOSE notaport\n")],
                "Invalid containerPort: notaport",
            ),
            (
                "badsub",
                &[("Dockerfile", "FROM scratch\nENV A=${B\n")],
                "missing '}'",
            ),
            (
                "platform",
                &[("Dockerfile", "FROM --platform=linux/s390x scratch\n")],
                "builds for linux/",
            ),
        ];
        for (case, files, expected) in cases {
            let dir = context(&daemon, &format!("{case}-{slug}"), files);
            let err = daemon.fails(cli, &["build", &dir.to_string_lossy()]);
            assert!(err.contains(expected), "{name} {case}: {err}");
        }
        let dir = context(
            &daemon,
            &format!("nofile-{slug}"),
            &[("Dockerfile", "FROM scratch\n")],
        );
        let err = daemon.fails(
            cli,
            &["build", "-f", "Other.Dockerfile", &dir.to_string_lossy()],
        );
        assert!(
            err.to_lowercase().contains("other.dockerfile"),
            "{name}: {err}"
        );

        assert_eq!(
            daemon.ok(cli, &["ps", "-aq"]).trim(),
            "",
            "{name}: no container left"
        );
        daemon.ok(cli, &["builder", "prune", "-f"]);
        let listed = daemon.ok(cli, &["images", "-a", "-q"]);
        assert_eq!(
            listed.lines().count(),
            1,
            "{name}: only the base image: {listed}"
        );
        assert_eq!(snapshots(&daemon), 1, "{name}: only the base image's layer");
    }
    // The API refuses a Dockerfile outside the context and a bad archive.
    let (code, body) = daemon.http(
        "POST",
        "/build?dockerfile=../Dockerfile",
        &tar_of(&[("Dockerfile", "FROM scratch\n")]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("within the build context"), "{body}");
    let (code, body) = daemon.http("POST", "/build", b"not a tar archive at all");
    assert_eq!(code, 400, "{body}");
    let (code, body) = daemon.http(
        "POST",
        "/build?t=Bad:Tag",
        &tar_of(&[("Dockerfile", "FROM scratch\n")]),
    );
    assert_eq!(code, 400, "{body}");
    // Nothing is left in the scratch dir of contexts.
    let scratch = daemon.root().join("builder/tmp");
    let left: Vec<_> = fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "contexts left behind: {left:?}");
}

/// A bad build: its name, its context's files and what the error says.
type BadCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// A tar archive of `files`.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn berthctl_builds_without_the_docker_cli() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    let cli = &clis[0];
    let dir = context(
        &daemon,
        "berthctl",
        &[
            (
                "build/Containerfile",
                &format!("FROM {IMAGE}\nARG WHO\nCOPY . /ctx/\nRUN echo \"hello $WHO\" > /hello\nCMD [\"cat\", \"/hello\"]\n"),
            ),
            (".dockerignore", "secret*\n"),
            ("kept.txt", "kept\n"),
            ("secret.key", "never sent\n"),
        ],
    );
    let socket = daemon.docker_socket.to_string_lossy().into_owned();
    let dir_arg = dir.to_string_lossy().into_owned();
    let out = daemon.berthctl_output(&[
        "build",
        "--docker-address",
        &socket,
        "-t",
        "made-by-berthctl",
        "-f",
        "build/Containerfile",
        "--build-arg",
        "WHO=berth",
        "--label",
        "by=berthctl",
        &dir_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Successfully tagged made-by-berthctl:latest"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Step 6/6 : LABEL by=\"berthctl\""),
        "{stdout}"
    );
    assert_eq!(
        daemon.ok(cli, &["run", "--rm", "made-by-berthctl"]),
        "hello berth\n"
    );
    let listing = daemon.ok(
        cli,
        &["run", "--rm", "made-by-berthctl", "ls", "-A", "/ctx"],
    );
    assert!(
        listing.contains("kept.txt") && !listing.contains("secret.key"),
        "{listing}"
    );
    assert_eq!(
        inspect(&daemon, cli, "made-by-berthctl")["Config"]["Labels"]["by"],
        "berthctl"
    );

    // Quiet: the ID only. A failed RUN: its exit code and message.
    let quiet = daemon.berthctl_output(&[
        "build",
        "--docker-address",
        &socket,
        "-q",
        "-f",
        "build/Containerfile",
        &dir_arg,
    ]);
    assert!(String::from_utf8_lossy(&quiet.stdout)
        .trim()
        .starts_with("sha256:"));
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN exit 7\n"),
    )
    .unwrap();
    let failed = daemon.berthctl_output(&["build", "--docker-address", &socket, &dir_arg]);
    assert_eq!(
        failed.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("returned a non-zero code: 7"));
    let bad =
        daemon.berthctl_output(&["build", "--docker-address", &socket, "-f", "nope", &dir_arg]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Cannot locate specified Dockerfile: nope")
    );

    clean_up(&daemon, cli, &["made-by-berthctl"]);
}

#[test]
fn a_built_image_is_pushed_pulled_back_and_run_and_intermediates_show_with_all() {
    let Some(registry) = berth_integration::registry::Registry::start() else {
        return;
    };
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    for cli in &clis {
        let name = cli.name;
        let slug = slug(cli);
        // The base comes from the registry: the build pulls it.
        let base = format!("{}/berth/base-{slug}:1", registry.address);
        daemon.ok(cli, &["tag", IMAGE, &base]);
        daemon.ok(cli, &["push", &base]);
        daemon.ok(cli, &["rmi", &base]);
        let dir = context(
            &daemon,
            &format!("push-{slug}"),
            &[(
                "Dockerfile",
                &format!("FROM {base}\nRUN echo pushed > /msg\nCMD [\"cat\", \"/msg\"]\n"),
            )],
        );
        // ADD of a URL (a blob the registry serves): saved as a file, 0600,
        // never unpacked, even though it is a gzip layer.
        let manifest = daemon.sh(&format!(
            "curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' http://{}/v2/berth/base-{slug}/manifests/1",
            registry.address
        ));
        let manifest: Value = serde_json::from_str(&manifest).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
        let size = manifest["layers"][0]["size"].as_u64().unwrap();
        let url = format!(
            "http://{}/v2/berth/base-{slug}/blobs/{layer}",
            registry.address
        );
        fs::write(
            dir.join("Dockerfile"),
            format!("FROM {base}\nADD {url} /downloads/\nADD {url} /named.tgz\nRUN echo pushed > /msg\nCMD [\"cat\", \"/msg\"]\n"),
        )
        .unwrap();
        let built = format!("{}/berth/built-{slug}:1", registry.address);
        let out = build(&daemon, cli, &dir, &["-t", &built]);
        assert!(out.contains("Pulling"), "{name}: {out}");
        // Only the named image is listed; -a shows the steps' images too.
        let listed = daemon.ok(cli, &["images", "-q"]);
        let all = daemon.ok(cli, &["images", "-a", "-q"]);
        assert!(
            all.lines().count() > listed.lines().count(),
            "{name}: {listed} vs {all}"
        );
        let history = daemon.ok(cli, &["history", "-q", &built]);
        assert!(history.lines().count() >= 3, "{name}: {history}");
        let saved = daemon.ok(
            cli,
            &[
                "run",
                "--rm",
                &built,
                "stat",
                "-c",
                "%s %a",
                &format!("/downloads/{layer}"),
                "/named.tgz",
            ],
        );
        assert_eq!(saved, format!("{size} 600\n{size} 600\n"), "{name}");
        let missing = dir.join("Missing.Dockerfile");
        let unknown = format!(
            "http://{}/v2/berth/base-{slug}/blobs/sha256:{}",
            registry.address,
            "0".repeat(64)
        );
        fs::write(&missing, format!("FROM {base}\nADD {unknown} /x\n")).unwrap();
        let err = daemon.fails(
            cli,
            &[
                "build",
                "-f",
                &missing.to_string_lossy(),
                &dir.to_string_lossy(),
            ],
        );
        assert!(
            err.contains("failed to GET") && err.contains("404"),
            "{name}: {err}"
        );

        daemon.ok(cli, &["push", &built]);
        daemon.ok(cli, &["rmi", &built]);
        daemon.ok(cli, &["builder", "prune", "-f"]);
        daemon.ok(cli, &["image", "prune", "-a", "-f"]);
        daemon.ok(cli, &["pull", &built]);
        assert_eq!(
            daemon.ok(cli, &["run", "--rm", &built]),
            "pushed\n",
            "{name}"
        );
        daemon.ok(cli, &["rmi", &built]);
        daemon.ok(
            cli,
            &[
                "load",
                "-i",
                &berth_integration::containerd::image_archive().to_string_lossy(),
            ],
        );
    }
}

#[test]
fn rm_forcerm_stdin_dockerfiles_and_an_interrupted_build() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    for cli in &clis {
        let name = cli.name;
        let slug = slug(cli);
        // --rm=false keeps the RUN containers, whole: they run again.
        let dir = context(
            &daemon,
            &format!("keep-{slug}"),
            &[(
                "Dockerfile",
                &format!("FROM {IMAGE}\nRUN echo kept-output > /made\n"),
            )],
        );
        let keep = format!("keep-{slug}");
        build(&daemon, cli, &dir, &["--rm=false", "-t", &keep]);
        let kept = daemon.ok(cli, &["ps", "-aq"]);
        assert_eq!(kept.lines().count(), 1, "{name}: {kept}");
        let again = daemon.ok(cli, &["start", "-a", kept.trim()]);
        assert_eq!(again, "", "{name}: the step's command ran again: {again}");
        assert_eq!(
            daemon.ok(cli, &["run", "--rm", &keep, "cat", "/made"]),
            "kept-output\n"
        );
        daemon.ok(cli, &["rm", kept.trim()]);

        // A failure with --rm=false keeps the container; --force-rm not.
        let failing = context(
            &daemon,
            &format!("keepfail-{slug}"),
            &[("Dockerfile", &format!("FROM {IMAGE}\nRUN exit 4\n"))],
        );
        daemon.fails(cli, &["build", "--rm=false", &failing.to_string_lossy()]);
        let left = daemon.ok(cli, &["ps", "-aq"]);
        assert_eq!(left.lines().count(), 1, "{name}: {left}");
        daemon.ok(cli, &["rm", left.trim()]);
        daemon.fails(
            cli,
            &[
                "build",
                "--rm=false",
                "--force-rm",
                &failing.to_string_lossy(),
            ],
        );
        assert_eq!(daemon.ok(cli, &["ps", "-aq"]).trim(), "", "{name}");

        // `docker build - < Dockerfile`: no context at all.
        let stdin = daemon.sh(&format!(
            "printf 'FROM {IMAGE}\\nRUN echo from-stdin > /f\\n' | DOCKER_BUILDKIT=0 {} build -q -t stdin-{slug} - && {} run --rm stdin-{slug} cat /f",
            cli.path.display(),
            cli.path.display()
        ));
        assert!(stdin.ends_with("from-stdin\n"), "{name}: {stdin}");

        // The client interrupted during a RUN: the step is stopped and its
        // container removed, no image is tagged.
        let slow = context(
            &daemon,
            &format!("slow-{slug}"),
            &[(
                "Dockerfile",
                &format!("FROM {IMAGE}\nRUN echo started && sleep 600\n"),
            )],
        );
        let mut child = daemon
            .docker_cmd(
                cli,
                &[
                    "build",
                    "-t",
                    &format!("never-{slug}"),
                    &slow.to_string_lossy(),
                ],
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = berth_integration::wait_until(std::time::Duration::from_secs(60), || {
            daemon.ok(cli, &["ps", "-q"]).lines().count() == 1
        });
        assert!(started, "{name}: the RUN container never ran");
        child.kill().unwrap();
        child.wait().unwrap();
        let stopped = berth_integration::wait_until(std::time::Duration::from_secs(30), || {
            daemon.ok(cli, &["ps", "-aq"]).trim().is_empty()
        });
        assert!(
            stopped,
            "{name}: the cancelled step's container is still there"
        );
        let images = daemon.ok(cli, &["images", "-q", &format!("never-{slug}")]);
        assert_eq!(images.trim(), "", "{name}");

        clean_up(&daemon, cli, &[&keep, &format!("stdin-{slug}")]);
    }
}

#[test]
fn the_escape_directive_and_continuations_reach_the_image() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    let cli = &clis[clis.len() - 1];
    let dockerfile = format!(
        "# escape=`\n\
         # a comment before the first instruction\n\
         FROM {IMAGE}\n\
         ENV WIN=C:\\dir `\n    \
             OTHER=two\n\
         RUN echo one `\n\
         # a comment inside the continuation\n    \
             && echo $OTHER > /out\n\
         CMD cat /out\n"
    );
    let dir = context(&daemon, "escape", &[("Dockerfile", &dockerfile)]);
    build(&daemon, cli, &dir, &["-t", "escaped"]);
    assert_eq!(daemon.ok(cli, &["run", "--rm", "escaped"]), "two\n");
    let env = inspect(&daemon, cli, "escaped")["Config"]["Env"].clone();
    assert!(
        env.as_array().unwrap().iter().any(|v| v == "WIN=C:\\dir"),
        "{env}"
    );
    // Shell-form CMD goes through the shell.
    assert_eq!(
        inspect(&daemon, cli, "escaped")["Config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "cat /out"])
    );
    clean_up(&daemon, cli, &["escaped"]);
}
