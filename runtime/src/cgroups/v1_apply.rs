//! Writing `linux.resources` into cgroup v1 control files.
//!
//! Only controllers the spec sets are touched. A controller that isn't
//! mounted is an error only when the spec sets a value for it (net_cls /
//! net_prio and realtime CPU files are silently skipped, as documented).
//! `linux.resources.devices` = None leaves device rules untouched; Some
//! (even empty) resets them to deny-all + spec rules + runc's defaults.

use std::io;
use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxNetwork,
    LinuxResources, LinuxThrottleDevice,
};

use super::convert::{self, v1_limit};
use super::error::{Error, Result};
use super::fsutil::{has_file, read_file, write_file};
use super::v1::V1Manager;

fn unsupported(field: &str, reason: impl Into<String>) -> Error {
    Error::Unsupported {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Apply every controller the spec sets.
pub(crate) fn apply(m: &V1Manager, r: &LinuxResources) -> Result<()> {
    let r = &convert::without_unset_values(r);
    if let Some(mem) = r.memory() {
        memory(m, mem)?;
    }
    if let Some(cpu) = r.cpu() {
        self::cpu(m, cpu)?;
    }
    if let Some(p) = r.pids() {
        let dir = m.need("pids", "linux.resources.pids.limit")?;
        write_file(
            dir,
            "pids.max",
            &convert::pids_max(p.limit()),
            "linux.resources.pids.limit",
        )?;
    }
    if let Some(bio) = r.block_io() {
        blkio(m, bio)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        hugetlb(m, limits)?;
    }
    if let Some(rules) = r.devices() {
        devices(m, rules)?;
    }
    if let Some(net) = r.network() {
        network(m, net)?;
    }
    if let Some(rdma) = r.rdma() {
        for (dev, lim) in rdma {
            let field = "linux.resources.rdma";
            if let Some(line) = convert::rdma_line(dev, lim.hca_handles(), lim.hca_objects())? {
                write_file(m.need("rdma", field)?, "rdma.max", &line, field)?;
            }
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(unsupported(
            "linux.resources.unified",
            "unified (cgroup v2) settings cannot be applied on a cgroup v1 host",
        ));
    }
    Ok(())
}

/// Parse a v1 byte limit; "unlimited" values are huge, which compares right.
fn parse_bytes(dir: &Path, file: &str, text: &str) -> Result<u128> {
    text.parse::<u128>().map_err(|e| Error::Read {
        path: dir.join(file),
        field: "linux.resources.memory".into(),
        os: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// -1 (unlimited) sorts above every real limit.
fn as_bound(v: i64) -> u128 {
    u128::try_from(v).unwrap_or(u128::MAX)
}

fn memory(m: &V1Manager, mem: &LinuxMemory) -> Result<()> {
    if mem.kernel().is_some() || mem.kernel_tcp().is_some() {
        tracing::debug!("linux.resources.memory.kernel/kernelTCP ignored");
    }
    let limit = mem.limit();
    let mut swap = mem.swap();
    let oom = mem.disable_oom_killer() == Some(true);
    let first_field = match () {
        _ if limit.is_some() => "linux.resources.memory.limit",
        _ if swap.is_some() => "linux.resources.memory.swap",
        _ if mem.reservation().is_some() => "linux.resources.memory.reservation",
        _ if mem.swappiness().is_some() => "linux.resources.memory.swappiness",
        _ if oom => "linux.resources.memory.disableOOMKiller",
        _ => return Ok(()),
    };
    let dir = m.need("memory", first_field)?;
    convert::check_swap_vs_limit(swap, limit)?;

    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    let memsw = has_file(dir, MEMSW);
    if memsw && swap.is_none() && limit.is_some_and(|l| l < 0) {
        swap = Some(-1); // unlimited memory: unlimited memory+swap too
    }
    if let Some(s) = swap {
        if !memsw {
            if s < 0 || Some(s) == limit {
                tracing::debug!("no swap accounting; swap {s} needs no memsw write");
                swap = None;
            } else {
                return Err(unsupported(
                    "linux.resources.memory.swap",
                    format!(
                        "swap accounting is not available ({} missing); leave swap unset or equal to the limit",
                        dir.join(MEMSW).display()
                    ),
                ));
            }
        }
    }
    const LIMIT_FIELD: &str = "linux.resources.memory.limit";
    const SWAP_FIELD: &str = "linux.resources.memory.swap";
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // The kernel keeps limit <= memsw at all times: raise memsw
            // first if the new limit exceeds the current memsw.
            let cur = read_file(dir, MEMSW, SWAP_FIELD)?;
            if as_bound(l) > parse_bytes(dir, MEMSW, &cur)? {
                write_file(dir, MEMSW, &v1_limit(s), SWAP_FIELD)?;
                write_file(dir, "memory.limit_in_bytes", &v1_limit(l), LIMIT_FIELD)?;
            } else {
                write_file(dir, "memory.limit_in_bytes", &v1_limit(l), LIMIT_FIELD)?;
                write_file(dir, MEMSW, &v1_limit(s), SWAP_FIELD)?;
            }
        }
        (Some(l), None) => write_file(dir, "memory.limit_in_bytes", &v1_limit(l), LIMIT_FIELD)?,
        (None, Some(s)) => write_file(dir, MEMSW, &v1_limit(s), SWAP_FIELD)?,
        (None, None) => {}
    }
    if let Some(res) = mem.reservation() {
        write_file(
            dir,
            "memory.soft_limit_in_bytes",
            &v1_limit(res),
            "linux.resources.memory.reservation",
        )?;
    }
    if let Some(sw) = mem.swappiness() {
        let field = "linux.resources.memory.swappiness";
        if sw > 100 {
            return Err(convert::invalid(field, sw, "must be 0..=100"));
        }
        write_file(dir, "memory.swappiness", &sw.to_string(), field)?;
    }
    if oom {
        let field = "linux.resources.memory.disableOOMKiller";
        write_file(dir, "memory.oom_control", "1", field)?;
    }
    Ok(())
}

fn cpu(m: &V1Manager, cpu: &LinuxCpu) -> Result<()> {
    let wants_cpu = cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.burst().is_some()
        || cpu.idle().is_some()
        || cpu.realtime_period().is_some()
        || cpu.realtime_runtime().is_some();
    if wants_cpu {
        let dir = m.need("cpu", "linux.resources.cpu")?;
        if let Some(s) = cpu.shares() {
            write_file(
                dir,
                "cpu.shares",
                &s.to_string(),
                "linux.resources.cpu.shares",
            )?;
        }
        // Period first so a quota is judged against the new period. The
        // kernel checks each write against the parent's limit with the
        // other value as it stands, so when the period alone is refused
        // (a shorter period under a parent quota), the quota goes first.
        let write_period = |p: u64| {
            write_file(
                dir,
                "cpu.cfs_period_us",
                &p.to_string(),
                "linux.resources.cpu.period",
            )
        };
        let write_quota = |q: i64| {
            write_file(
                dir,
                "cpu.cfs_quota_us",
                &v1_limit(q),
                "linux.resources.cpu.quota",
            )
        };
        match (cpu.period(), cpu.quota()) {
            (Some(p), Some(q)) => {
                if write_period(p).is_err() {
                    write_quota(q)?;
                    write_period(p)?;
                }
                write_quota(q)?;
            }
            (Some(p), None) => write_period(p)?,
            (None, Some(q)) => write_quota(q)?,
            (None, None) => {}
        }
        if let Some(b) = cpu.burst() {
            let field = "linux.resources.cpu.burst";
            if !has_file(dir, "cpu.cfs_burst_us") {
                return Err(unsupported(field, "cpu.cfs_burst_us is not available"));
            }
            write_file(dir, "cpu.cfs_burst_us", &b.to_string(), field)?;
        }
        realtime(dir, cpu)?;
        if let Some(idle) = cpu.idle() {
            let field = "linux.resources.cpu.idle";
            if has_file(dir, "cpu.idle") {
                write_file(dir, "cpu.idle", &idle.to_string(), field)?;
            } else if idle != 0 {
                return Err(unsupported(field, "cpu.idle is not available"));
            }
        }
    }
    if let Some(cpus) = cpu.cpus() {
        let field = "linux.resources.cpu.cpus";
        write_file(m.need("cpuset", field)?, "cpuset.cpus", cpus, field)?;
    }
    if let Some(mems) = cpu.mems() {
        let field = "linux.resources.cpu.mems";
        write_file(m.need("cpuset", field)?, "cpuset.mems", mems, field)?;
    }
    Ok(())
}

/// Realtime period/runtime: only where the kernel has RT group scheduling
/// (the files exist); otherwise skipped with a debug log.
fn realtime(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    if let Some(p) = cpu.realtime_period() {
        if has_file(dir, "cpu.rt_period_us") {
            let field = "linux.resources.cpu.realtimePeriod";
            write_file(dir, "cpu.rt_period_us", &p.to_string(), field)?;
        } else {
            tracing::debug!("cpu.rt_period_us missing; realtimePeriod skipped");
        }
    }
    if let Some(r) = cpu.realtime_runtime() {
        if has_file(dir, "cpu.rt_runtime_us") {
            let field = "linux.resources.cpu.realtimeRuntime";
            write_file(dir, "cpu.rt_runtime_us", &r.to_string(), field)?;
        } else {
            tracing::debug!("cpu.rt_runtime_us missing; realtimeRuntime skipped");
        }
    }
    Ok(())
}

/// First existing file among `candidates`, or an Unsupported error.
fn pick<'a>(dir: &Path, candidates: &[&'a str], field: &str) -> Result<&'a str> {
    candidates
        .iter()
        .copied()
        .find(|f| has_file(dir, f))
        .ok_or_else(|| unsupported(field, format!("none of {candidates:?} exist")))
}

fn blkio(m: &V1Manager, bio: &LinuxBlockIo) -> Result<()> {
    let throttles: [(&str, &Option<Vec<LinuxThrottleDevice>>, &str); 4] = [
        (
            "blkio.throttle.read_bps_device",
            bio.throttle_read_bps_device(),
            "linux.resources.blockIO.throttleReadBpsDevice",
        ),
        (
            "blkio.throttle.write_bps_device",
            bio.throttle_write_bps_device(),
            "linux.resources.blockIO.throttleWriteBpsDevice",
        ),
        (
            "blkio.throttle.read_iops_device",
            bio.throttle_read_iops_device(),
            "linux.resources.blockIO.throttleReadIOPSDevice",
        ),
        (
            "blkio.throttle.write_iops_device",
            bio.throttle_write_iops_device(),
            "linux.resources.blockIO.throttleWriteIOPSDevice",
        ),
    ];
    let any = bio.weight().is_some()
        || bio.leaf_weight().is_some()
        || bio.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || throttles
            .iter()
            .any(|(_, l, _)| l.as_ref().is_some_and(|v| !v.is_empty()));
    if !any {
        return Ok(());
    }
    let dir = m.need("blkio", "linux.resources.blockIO")?;
    if let Some(w) = bio.weight() {
        let field = "linux.resources.blockIO.weight";
        let file = pick(dir, &["blkio.weight", "blkio.bfq.weight"], field)?;
        write_file(dir, file, &w.to_string(), field)?;
    }
    if let Some(w) = bio.leaf_weight() {
        let field = "linux.resources.blockIO.leafWeight";
        let file = pick(dir, &["blkio.leaf_weight"], field)?;
        write_file(dir, file, &w.to_string(), field)?;
    }
    for d in bio.weight_device().iter().flatten() {
        let dev = format!("{}:{}", d.major(), d.minor());
        if let Some(w) = d.weight() {
            let field = "linux.resources.blockIO.weightDevice.weight";
            let file = pick(
                dir,
                &["blkio.weight_device", "blkio.bfq.weight_device"],
                field,
            )?;
            write_file(dir, file, &format!("{dev} {w}"), field)?;
        }
        if let Some(w) = d.leaf_weight() {
            let field = "linux.resources.blockIO.weightDevice.leafWeight";
            let file = pick(dir, &["blkio.leaf_weight_device"], field)?;
            write_file(dir, file, &format!("{dev} {w}"), field)?;
        }
    }
    for (file, list, field) in throttles {
        for d in list.iter().flatten() {
            let line = format!("{}:{} {}", d.major(), d.minor(), d.rate());
            write_file(dir, file, &line, field)?;
        }
    }
    Ok(())
}

fn hugetlb(m: &V1Manager, limits: &[LinuxHugepageLimit]) -> Result<()> {
    let field = "linux.resources.hugepageLimits";
    for l in limits {
        let dir = m.need("hugetlb", field)?;
        let size = convert::hugepage_size(l.page_size())?;
        let file = format!("hugetlb.{size}.limit_in_bytes");
        write_file(dir, &file, &v1_limit(l.limit()), field)?;
        let rsvd = format!("hugetlb.{size}.rsvd.limit_in_bytes");
        if has_file(dir, &rsvd) {
            write_file(dir, &rsvd, &v1_limit(l.limit()), field)?;
        }
    }
    Ok(())
}

fn devices(m: &V1Manager, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let field = "linux.resources.devices";
    let dir = m.need("devices", field)?;
    write_file(dir, "devices.deny", "a", field)?;
    for rule in rules {
        let line = convert::device_rule(rule)?;
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write_file(dir, file, &line, field)?;
    }
    for line in convert::DEFAULT_DEVICE_RULES {
        write_file(dir, "devices.allow", line, "default device rules")?;
    }
    Ok(())
}

fn network(m: &V1Manager, net: &LinuxNetwork) -> Result<()> {
    if let Some(id) = net.class_id() {
        match m.dir("net_cls") {
            Some(dir) => write_file(
                dir,
                "net_cls.classid",
                &id.to_string(),
                "linux.resources.network.classID",
            )?,
            None => tracing::debug!("net_cls not mounted; classID ignored"),
        }
    }
    for p in net.priorities().iter().flatten() {
        match m.dir("net_prio") {
            Some(dir) => write_file(
                dir,
                "net_prio.ifpriomap",
                &format!("{} {}", p.name(), p.priority()),
                "linux.resources.network.priorities",
            )?,
            None => tracing::debug!("net_prio not mounted; priorities ignored"),
        }
    }
    Ok(())
}
