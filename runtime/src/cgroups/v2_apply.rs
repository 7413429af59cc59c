//! Writing `linux.resources` into cgroup v2 control files.
//!
//! Device rules become an eBPF program attached to the directory (see
//! `v2_devices`): `devices` = None leaves the current one in force, Some
//! (even empty) replaces it with deny-all + spec rules + the defaults.
//!
//! Not supported on v2 and skipped with a debug log: memory swappiness and
//! disableOOMKiller, realtime CPU, blkio leaf weights, net_cls/net_prio.
//! `linux.resources.unified` is written last, as-is, so it can override.

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::convert::{self, v2_limit};
use super::error::{Error, Result};
use super::fsutil::{has_file, write_file};
use super::v2_devices::{DeviceFilter, DeviceFilterInstaller};

/// Error unless `file` exists (i.e. the controller is enabled here).
fn need(dir: &Path, file: &str, controller: &str, field: &str) -> Result<()> {
    if has_file(dir, file) {
        Ok(())
    } else {
        Err(Error::MissingController {
            controller: format!("{controller} (no {})", dir.join(file).display()),
            field: field.to_string(),
        })
    }
}

/// Write `value` to `file` after checking the controller is there.
fn set(dir: &Path, controller: &str, file: &str, value: &str, field: &str) -> Result<()> {
    need(dir, file, controller, field)?;
    write_file(dir, file, value, field)
}

/// Apply every controller the spec sets to the cgroup at `dir`, device
/// rules through `devices`.
pub(crate) fn apply(
    dir: &Path,
    r: &LinuxResources,
    devices: &dyn DeviceFilterInstaller,
) -> Result<()> {
    let r = &convert::without_unset_values(r);
    // Compiled first: a bad rule is refused before anything is written.
    let device_filter = r
        .devices()
        .as_deref()
        .map(DeviceFilter::for_container)
        .transpose()?;
    if let Some(mem) = r.memory() {
        memory(dir, mem)?;
    }
    if let Some(c) = r.cpu() {
        cpu(dir, c)?;
    }
    if let Some(p) = r.pids() {
        let v = convert::pids_max(p.limit());
        set(dir, "pids", "pids.max", &v, "linux.resources.pids.limit")?;
    }
    if let Some(bio) = r.block_io() {
        io(dir, bio)?;
    }
    for l in r.hugepage_limits().iter().flatten() {
        let field = "linux.resources.hugepageLimits";
        let size = convert::hugepage_size(l.page_size())?;
        let value = v2_limit(l.limit());
        set(
            dir,
            "hugetlb",
            &format!("hugetlb.{size}.max"),
            &value,
            field,
        )?;
        let rsvd = format!("hugetlb.{size}.rsvd.max");
        if has_file(dir, &rsvd) {
            write_file(dir, &rsvd, &value, field)?;
        }
    }
    if let Some(rdma) = r.rdma() {
        for (dev, lim) in rdma {
            let field = "linux.resources.rdma";
            if let Some(line) = convert::rdma_line(dev, lim.hca_handles(), lim.hca_objects())? {
                set(dir, "rdma", "rdma.max", &line, field)?;
            }
        }
    }
    if let Some(filter) = &device_filter {
        devices.install(dir, filter)?;
    }
    if r.network().is_some() {
        tracing::debug!("net_cls/net_prio do not exist on cgroup v2; network ignored");
    }
    if let Some(unified) = r.unified() {
        let sorted: BTreeMap<&String, &String> = unified.iter().collect();
        for (key, value) in sorted {
            let file = convert::unified_key(key)?;
            write_file(dir, file, value, &format!("linux.resources.unified.{file}"))?;
        }
    }
    Ok(())
}

fn memory(dir: &Path, mem: &LinuxMemory) -> Result<()> {
    if mem.kernel().is_some() || mem.kernel_tcp().is_some() {
        tracing::debug!("linux.resources.memory.kernel/kernelTCP ignored");
    }
    if mem.swappiness().is_some() || mem.disable_oom_killer().is_some() {
        tracing::debug!("memory swappiness/disableOOMKiller have no cgroup v2 file; ignored");
    }
    let limit = mem.limit();
    convert::check_swap_vs_limit(mem.swap(), limit)?;
    if let Some(swap) = convert::v2_swap_max(mem.swap(), limit)? {
        let field = "linux.resources.memory.swap";
        if has_file(dir, "memory.swap.max") {
            write_file(dir, "memory.swap.max", &swap, field)?;
        } else if swap == "0" || swap == "max" {
            tracing::debug!("no memory.swap.max (no swap accounting); {swap} needs no write");
        } else {
            return Err(Error::Unsupported {
                field: field.into(),
                reason: format!(
                    "swap accounting is not available ({} missing); leave swap unset or equal to the limit",
                    dir.join("memory.swap.max").display()
                ),
            });
        }
    }
    if let Some(l) = limit {
        let field = "linux.resources.memory.limit";
        set(dir, "memory", "memory.max", &v2_limit(l), field)?;
    }
    if let Some(r) = mem.reservation() {
        let field = "linux.resources.memory.reservation";
        set(dir, "memory", "memory.low", &v2_limit(r), field)?;
    }
    Ok(())
}

fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(shares) = c.shares() {
        let w = convert::shares_to_weight(shares).to_string();
        set(dir, "cpu", "cpu.weight", &w, "linux.resources.cpu.shares")?;
    }
    if c.quota().is_some() || c.period().is_some() {
        let v = convert::cpu_max(c.quota(), c.period());
        set(dir, "cpu", "cpu.max", &v, "linux.resources.cpu.quota")?;
    }
    if let Some(b) = c.burst() {
        let field = "linux.resources.cpu.burst";
        set(dir, "cpu", "cpu.max.burst", &b.to_string(), field)?;
    }
    if let Some(idle) = c.idle() {
        let field = "linux.resources.cpu.idle";
        set(dir, "cpu", "cpu.idle", &idle.to_string(), field)?;
    }
    if c.realtime_period().is_some() || c.realtime_runtime().is_some() {
        tracing::debug!("realtime CPU limits are not supported on cgroup v2; skipped");
    }
    if let Some(cpus) = c.cpus() {
        set(
            dir,
            "cpuset",
            "cpuset.cpus",
            cpus,
            "linux.resources.cpu.cpus",
        )?;
    }
    if let Some(mems) = c.mems() {
        set(
            dir,
            "cpuset",
            "cpuset.mems",
            mems,
            "linux.resources.cpu.mems",
        )?;
    }
    Ok(())
}

fn io(dir: &Path, bio: &LinuxBlockIo) -> Result<()> {
    let bfq = has_file(dir, "io.bfq.weight");
    if let Some(w) = bio.weight() {
        let field = "linux.resources.blockIO.weight";
        if bfq {
            write_file(dir, "io.bfq.weight", &w.to_string(), field)?;
        } else {
            let v = convert::blkio_weight_to_io_weight(w).to_string();
            set(dir, "io", "io.weight", &v, field)?;
        }
    }
    if bio.leaf_weight().is_some() {
        tracing::debug!("blockIO.leafWeight has no cgroup v2 equivalent; ignored");
    }
    for d in bio.weight_device().iter().flatten() {
        let Some(w) = d.weight() else {
            continue;
        };
        let field = "linux.resources.blockIO.weightDevice";
        let dev = format!("{}:{}", d.major(), d.minor());
        if bfq {
            write_file(dir, "io.bfq.weight", &format!("{dev} {w}"), field)?;
        } else {
            let v = convert::blkio_weight_to_io_weight(w);
            set(dir, "io", "io.weight", &format!("{dev} {v}"), field)?;
        }
    }
    for line in convert::io_max_lines(bio) {
        let field = "linux.resources.blockIO.throttle*";
        set(dir, "io", "io.max", &line, field)?;
    }
    Ok(())
}
