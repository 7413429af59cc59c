//! Device rules on cgroup v2, enforced by the kernel: berth's eBPF device
//! filter attached to a cgroup made for the test in the host's cgroup2
//! hierarchy (on a hybrid host the unified one: device programs attach to
//! any cgroup2 directory and apply to its processes whatever controllers
//! it has), with a shell in that cgroup trying devices. Updates must change
//! what the same shell may do, and removing the cgroup must free the
//! programs. Needs root and a cgroup2 mount; otherwise skipped with a note.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use berth_integration::{is_root, wait_until};
use berth_runtime::cgroups::v2_devices::{
    attached_programs, is_program_loaded, Access, AttachedProgram, DeviceFilter,
    DeviceFilterInstaller, DeviceKind, DeviceRule, KernelInstaller, PROGRAM_NAME,
};
use berth_runtime::cgroups::{CgroupManager, V2Manager};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use serde_json::json;

/// How long the kernel may take to free a detached program.
const FREE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A cgroup of the test's own in the cgroup2 hierarchy, removed on drop.
struct TestCgroup {
    dir: PathBuf,
    manager: V2Manager,
}

impl TestCgroup {
    fn new(name: &str) -> Option<TestCgroup> {
        if !is_root() {
            println!("note: not root; cgroup v2 device test skipped");
            return None;
        }
        let mount = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|p| statfs(*p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC));
        let Some(mount) = mount else {
            println!("note: no cgroup2 mount; cgroup v2 device test skipped");
            return None;
        };
        // Made here rather than with the manager's create(), which would
        // also delegate controllers in the hierarchy root.
        let dir = mount.join(format!("berth-devices-v2-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let manager = V2Manager::new(dir.clone());
        Some(TestCgroup { dir, manager })
    }

    /// Berth's programs on the cgroup.
    fn ours(&self) -> Vec<AttachedProgram> {
        let all = attached_programs(&self.dir).expect("BPF_PROG_QUERY");
        all.into_iter().filter(|p| p.name == PROGRAM_NAME).collect()
    }

    /// The one program of berth's on the cgroup.
    fn only_program(&self) -> u32 {
        let ours = self.ours();
        assert_eq!(ours.len(), 1, "exactly one device filter: {ours:?}");
        ours[0].id
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.dir.exists() {
            if let Err(e) = self.manager.destroy() {
                eprintln!("removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// A shell in the test cgroup that runs one command line at a time.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Shell {
    /// Start it and move it into `cgroup` before it runs anything.
    fn start_in(cgroup: &TestCgroup) -> Shell {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"exec 2>&1; while IFS= read -r line; do eval "$line"; echo "status=$?"; done"#)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sh");
        let stdin = child.stdin.take().expect("stdin");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let pid = i32::try_from(child.id()).expect("pid");
        let shell = Shell { child, stdin, out };
        cgroup
            .manager
            .add_task(pid)
            .expect("move the shell into the cgroup");
        shell
    }

    /// Run `line`: its exit status and output.
    fn run(&mut self, line: &str) -> (i32, String) {
        writeln!(self.stdin, "{line}").expect("send command");
        let mut output = String::new();
        loop {
            let mut l = String::new();
            let n = self.out.read_line(&mut l).expect("read shell output");
            assert!(n > 0, "shell exited during {line:?}: {output}");
            if let Some(status) = l.trim_end().strip_prefix("status=") {
                return (status.parse().expect("status"), output);
            }
            output.push_str(&l);
        }
    }

    fn assert_allowed(&mut self, what: &str, line: &str) {
        let (status, output) = self.run(line);
        assert_eq!(status, 0, "{what} should be allowed ({line}): {output}");
    }

    fn assert_denied(&mut self, what: &str, line: &str) {
        let (status, output) = self.run(line);
        assert!(
            status != 0 && output.contains("Operation not permitted"),
            "{what} should fail with EPERM ({line}): status {status}: {output}"
        );
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &str) -> String {
    format!(r#"(exec 3<"{path}")"#)
}

fn read_write(path: &str) -> String {
    format!(r#"(exec 3<>"{path}")"#)
}

fn char_rule(allow: bool, major: u32, minor: u32, access: Access) -> DeviceRule {
    DeviceRule {
        allow,
        kind: DeviceKind::Char,
        major: Some(major),
        minor: Some(minor),
        access,
    }
}

/// A node in `dir` for a block device of this host that the test itself
/// can open (preferring disks to loop and RAM devices; a sandbox may keep
/// even root from the disks), with its numbers; None when there is none.
fn openable_block_device(dir: &Path) -> Option<(PathBuf, u64, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/dev/block").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((Ok(major), Ok(minor))) = name
            .split_once(':')
            .map(|(a, b)| (a.parse::<u64>(), b.parse::<u64>()))
        else {
            continue;
        };
        let uevent = std::fs::read_to_string(entry.path().join("uevent")).unwrap_or_default();
        let virtual_disk = ["DEVNAME=loop", "DEVNAME=ram", "DEVNAME=zram", "DEVNAME=nbd"]
            .iter()
            .any(|p| uevent.contains(p));
        found.push((virtual_disk, major, minor));
    }
    found.sort();
    for (_, major, minor) in found {
        let node = dir.join(format!("block-{major}-{minor}"));
        mknod(
            &node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(major, minor),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", node.display()));
        if std::fs::File::open(&node).is_ok() {
            return Some((node, major, minor));
        }
    }
    None
}

#[test]
fn filter_denies_all_but_dev_null_and_an_update_replaces_it() {
    let Some(cg) = TestCgroup::new("filter") else {
        return;
    };
    let mut sh = Shell::start_in(&cg);
    sh.assert_allowed("/dev/zero before any filter", &read_write("/dev/zero"));

    let rw = Access::READ.union(Access::WRITE);
    let only_null = [DeviceRule::DENY_ALL, char_rule(true, 1, 3, rw)];
    let filter = DeviceFilter::compile(&only_null).expect("compile");
    KernelInstaller.install(&cg.dir, &filter).expect("install");
    let first = cg.only_program();
    sh.assert_denied("/dev/zero", &read("/dev/zero"));
    sh.assert_denied("/dev/zero", &read_write("/dev/zero"));
    sh.assert_allowed("/dev/null", &read_write("/dev/null"));
    sh.assert_allowed("/dev/null, again", "echo x > /dev/null");

    // The update: /dev/zero for reading only, and no /dev/null any more.
    let only_zero = [DeviceRule::DENY_ALL, char_rule(true, 1, 5, Access::READ)];
    let filter = DeviceFilter::compile(&only_zero).expect("compile");
    KernelInstaller.install(&cg.dir, &filter).expect("update");
    let second = cg.only_program();
    assert_ne!(first, second, "a new program replaced the first");
    assert!(
        wait_until(FREE_TIMEOUT, || !is_program_loaded(first).expect("lookup")),
        "the replaced program {first} is freed"
    );
    sh.assert_allowed("reading /dev/zero", &read("/dev/zero"));
    sh.assert_allowed("reading /dev/zero, for real", "head -c1 /dev/zero | wc -c");
    sh.assert_denied("writing /dev/zero", &read_write("/dev/zero"));
    sh.assert_denied("/dev/null", &read_write("/dev/null"));

    drop(sh);
    cg.manager.destroy().expect("destroy");
    assert!(!cg.dir.exists());
    assert!(
        wait_until(FREE_TIMEOUT, || !is_program_loaded(second).expect("lookup")),
        "the program {second} is freed with its cgroup"
    );
}

#[test]
fn container_rules_keep_block_devices_out_until_an_update_allows_one() {
    let Some(cg) = TestCgroup::new("container") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((disk, major, minor)) = openable_block_device(tmp.path()) else {
        println!("note: no block device the test may open; host disk test skipped");
        return;
    };
    let disk = disk.to_str().expect("utf-8 path").to_string();
    let made_inside = format!("{}/made-inside", tmp.path().display());

    let mut sh = Shell::start_in(&cg);
    sh.assert_allowed("the host disk before any filter", &read(&disk));

    // What `create` applies for a docker-style spec.
    let spec = json!([{"allow": false, "access": "rwm"}]);
    let resources = serde_json::from_value(json!({"devices": spec})).expect("resources");
    cg.manager.apply(&resources).expect("apply");
    let first = cg.only_program();
    sh.assert_denied("the host disk", &read(&disk));
    sh.assert_allowed(
        "mknod (allowed for every device, as runc does)",
        &format!("mknod {made_inside} b {major} {minor}"),
    );
    sh.assert_denied("the node made inside", &read(&made_inside));
    sh.assert_allowed("/dev/null", &read_write("/dev/null"));
    sh.assert_allowed("/dev/zero", &read("/dev/zero"));

    // An update that allows reading the disk.
    let spec = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "b", "major": major, "minor": minor, "access": "r"}
    ]);
    let resources = serde_json::from_value(json!({"devices": spec})).expect("resources");
    cg.manager.apply(&resources).expect("update");
    let second = cg.only_program();
    assert_ne!(first, second);
    sh.assert_allowed("reading the host disk", &read(&disk));
    sh.assert_denied("writing the host disk", &read_write(&disk));

    // An update without device rules leaves the filter in force.
    let resources = serde_json::from_value(json!({})).expect("resources");
    cg.manager.apply(&resources).expect("update");
    assert_eq!(cg.only_program(), second);
    sh.assert_denied("writing the host disk", &read_write(&disk));

    drop(sh);
    cg.manager.destroy().expect("destroy");
    for id in [first, second] {
        assert!(
            wait_until(FREE_TIMEOUT, || !is_program_loaded(id).expect("lookup")),
            "program {id} is freed"
        );
    }
}
