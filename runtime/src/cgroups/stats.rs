//! Resource usage statistics: the [`Stats`] type (shaped like the `data`
//! object of `runc events --stats`, i.e. runc's `types.Stats`) and the
//! parsers for the cgroup files both versions read.
//!
//! The JSON keys and the omission rules follow runc's Go struct tags:
//! numbers tagged `omitempty` there are left out when zero, lists and maps
//! when empty; nested objects are always present (Go's `omitempty` has no
//! effect on structs). Readers live in `stats_v1.rs` and `stats_v2.rs`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// What the errors of the stats readers name as the purpose of the read.
pub(crate) const FIELD: &str = "stats";

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Resource usage of one container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// CPU time and throttling.
    pub cpu: Cpu,
    /// The cpuset in force.
    pub cpuset: CpuSet,
    /// Memory usage and limits.
    pub memory: Memory,
    /// Process count and limit.
    pub pids: Pids,
    /// Block I/O counters.
    pub blkio: Blkio,
    /// Per huge page size (`"2MB"`, `"1GB"`, ...).
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Intel RDT: not collected (always empty), kept for key parity.
    pub intel_rdt: IntelRdt,
    /// Network interfaces: not collected by the cgroups module (`null`).
    pub network_interfaces: Option<Vec<NetworkInterface>>,
}

/// CPU statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// Consumed CPU time.
    pub usage: CpuUsage,
    /// CFS bandwidth throttling.
    pub throttling: Throttling,
    /// Pressure stall information (v2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<Psi>,
}

/// CPU time, in nanoseconds, since the cgroup was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    /// Total CPU time.
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    /// Total per CPU (v1 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Kernel-mode time per CPU (v1 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    /// User-mode time per CPU (v1 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    /// Kernel-mode time.
    pub kernel: u64,
    /// User-mode time.
    pub user: u64,
}

/// CFS bandwidth throttling counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Throttling {
    /// Enforcement periods that elapsed.
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    #[serde(rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Total time throttled, in nanoseconds.
    #[serde(rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// The cpuset of the cgroup (v1: `cpuset.*`; v2: only the effective
/// cpus and mems).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuSet {
    /// Allowed CPUs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    /// `cpuset.cpu_exclusive`.
    pub cpu_exclusive: u64,
    /// Allowed memory nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    /// `cpuset.mem_hardwall`.
    pub mem_hardwall: u64,
    /// `cpuset.mem_exclusive`.
    pub mem_exclusive: u64,
    /// `cpuset.memory_migrate`.
    pub memory_migrate: u64,
    /// `cpuset.memory_spread_page`.
    pub memory_spread_page: u64,
    /// `cpuset.memory_spread_slab`.
    pub memory_spread_slab: u64,
    /// `cpuset.memory_pressure`.
    pub memory_pressure: u64,
    /// `cpuset.sched_load_balance`.
    pub sched_load_balance: u64,
    /// `cpuset.sched_relax_domain_level`.
    pub sched_relax_domain_level: i64,
}

/// One memory counter family (bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    /// The limit (`u64::MAX` for "max" on v2; v1 reports its own huge
    /// number for "unlimited").
    pub limit: u64,
    /// Current usage.
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Highest usage recorded.
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    /// How often the limit was hit.
    pub failcnt: u64,
}

/// Memory statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// Page cache (`cache` on v1, `file` on v2).
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    /// Memory.
    pub usage: MemoryEntry,
    /// Memory + swap (v2 values are combined the same way for parity).
    pub swap: MemoryEntry,
    /// Kernel memory (v1 only).
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers (v1 only).
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// Every counter of `memory.stat`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
    /// Pressure stall information (v2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<Psi>,
}

/// Process counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pids {
    /// Processes/threads in the cgroup.
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// `pids.max`; 0 (left out) when unlimited, as runc reports it.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// One block I/O counter: device, operation and value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkioEntry {
    /// Device major number.
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    /// Device minor number.
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total` (empty for
    /// files without an operation column).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// The counter.
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

/// Block I/O statistics (v1 blkio tables; v2 `io.stat` mapped onto the
/// first two).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Blkio {
    /// Bytes transferred.
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// I/O operations.
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    /// Queued requests (CFQ/BFQ only).
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    /// Service time (CFQ/BFQ only).
    #[serde(
        rename = "ioServiceTimeRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    /// Wait time (CFQ/BFQ only).
    #[serde(rename = "ioWaitTimeRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    /// Merged requests (CFQ/BFQ only).
    #[serde(rename = "ioMergedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    /// Device time (CFQ/BFQ only).
    #[serde(rename = "ioTimeRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    /// Sectors transferred (CFQ/BFQ only).
    #[serde(rename = "sectorsRecursive", skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
    /// Pressure stall information (v2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<Psi>,
}

/// Huge page usage for one page size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hugetlb {
    /// Current usage in bytes.
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Highest usage recorded (v1 only).
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Allocations refused by the limit.
    pub failcnt: u64,
}

/// Pressure stall information of one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiData,
    /// All tasks stalled.
    pub full: PsiData,
}

/// One PSI line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PsiData {
    /// Share of the last 10 s (percent).
    pub avg10: f64,
    /// Share of the last 60 s (percent).
    pub avg60: f64,
    /// Share of the last 300 s (percent).
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total: u64,
}

/// Placeholder for runc's `intel_rdt` object (always `{}` here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelRdt {}

/// A network interface's counters (runc's untagged Go field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct NetworkInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

// ---------------------------------------------------------------------------
// Reading

/// Read `dir/file` for statistics; `None` if the file (or the directory)
/// does not exist or the kernel does not support it: a container need not
/// have every controller, and kernels differ in which files they offer.
pub(crate) fn read_opt(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            Ok(None)
        }
        Err(os) => Err(Error::Read {
            path,
            field: FIELD.into(),
            os,
        }),
    }
}

/// Read and parse `dir/file` if it exists; parse failures name the file.
pub(crate) fn parse_opt<T>(
    dir: &Path,
    file: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    match read_opt(dir, file)? {
        None => Ok(None),
        Some(text) => parse(&text).map(Some).map_err(|reason| Error::Parse {
            path: dir.join(file),
            field: FIELD.into(),
            reason,
        }),
    }
}

/// A single-value file as u64 (see [`parse_value`]); `None` if missing.
pub(crate) fn u64_opt(dir: &Path, file: &str) -> Result<Option<u64>> {
    parse_opt(dir, file, parse_value)
}

/// `pids.current` and `pids.max` (`max` is reported as 0, like runc). Same files on v1 and v2..
pub(crate) fn read_pids(dir: &Path) -> Result<Pids> {
    let current = u64_opt(dir, "pids.current")?.unwrap_or(0);
    let limit = match u64_opt(dir, "pids.max")? {
        Some(u64::MAX) | None => 0,
        Some(v) => v,
    };
    Ok(Pids { current, limit })
}

// ---------------------------------------------------------------------------
// Parsers (pure, over file contents)

/// One number: `max` is `u64::MAX`; a negative number (some v1 files
/// report -1 for "unset") is 0.
pub(crate) fn parse_value(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    match t.parse::<u64>() {
        Ok(v) => Ok(v),
        Err(_) if t.parse::<i64>().is_ok_and(|v| v < 0) => Ok(0),
        Err(e) => Err(format!("{t:?} is not a number: {e}")),
    }
}

/// A signed number (`cpuset.sched_relax_domain_level`).
pub(crate) fn parse_i64(text: &str) -> std::result::Result<i64, String> {
    let t = text.trim();
    t.parse::<i64>()
        .map_err(|e| format!("{t:?} is not a number: {e}"))
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events,
/// hugetlb events). Blank lines are skipped; anything else malformed is an
/// error naming the line.
pub(crate) fn parse_keyed(text: &str) -> std::result::Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("malformed line {line:?} (want \"key value\")"));
        };
        let value = parse_value(value).map_err(|e| format!("line {line:?}: {e}"))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// The value of `key` in `key value` lines.
pub(crate) fn keyed_get(pairs: &[(String, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Whitespace-separated numbers (`cpuacct.usage_percpu*`).
pub(crate) fn parse_numbers(text: &str) -> std::result::Result<Vec<u64>, String> {
    text.split_whitespace().map(parse_value).collect()
}

/// `cpuacct.usage_all`: a `cpu user system` header, then one line per CPU.
/// Returns (kernel, user) per CPU in nanoseconds.
pub(crate) fn parse_usage_all(text: &str) -> std::result::Result<(Vec<u64>, Vec<u64>), String> {
    let mut kernel = Vec::new();
    let mut user = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some(h) if h.split_whitespace().eq(["cpu", "user", "system"]) => {}
        other => return Err(format!("unexpected header {other:?}")),
    }
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, u, s] = f.as_slice() else {
            return Err(format!(
                "malformed line {line:?} (want \"cpu user system\")"
            ));
        };
        user.push(parse_value(u)?);
        kernel.push(parse_value(s)?);
    }
    Ok((kernel, user))
}

/// Clock ticks (USER_HZ) to nanoseconds.
pub(crate) fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(hz.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// USER_HZ of this system (the unit of `cpuacct.stat`), 100 if unknown.
pub(crate) fn clock_ticks() -> u64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(v)) if v > 0 => u64::try_from(v).unwrap_or(100),
        _ => 100,
    }
}

/// A CPU or memory-node list such as `0-3,8,10-11`.
pub(crate) fn parse_list(text: &str) -> std::result::Result<Vec<u16>, String> {
    let mut out = Vec::new();
    let num = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|e| format!("bad list element {s:?} in {text:?}: {e}"))
    };
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("bad range {part:?} in {text:?}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A v1 blkio table: `MAJ:MIN Op value` lines (or `MAJ:MIN value` for
/// files without operations); `Total value` summary lines are dropped.
pub(crate) fn parse_blkio(text: &str) -> std::result::Result<Vec<BlkioEntry>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match f.as_slice() {
            [] => continue,
            ["Total", _] => continue,
            [dev, value] => (dev, "", value),
            [dev, op, value] => (dev, *op, value),
            _ => return Err(format!("malformed line {line:?}")),
        };
        let (major, minor) =
            parse_dev(dev).ok_or_else(|| format!("bad device {dev:?} in line {line:?}"))?;
        let value = parse_value(value).map_err(|e| format!("line {line:?}: {e}"))?;
        out.push(BlkioEntry {
            major,
            minor,
            op: op.to_string(),
            value,
        });
    }
    Ok(out)
}

/// v2 `io.stat` (`MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...`),
/// mapped as runc does: rbytes/wbytes to `Read`/`Write` bytes, rios/wios
/// to `Read`/`Write` operations; other keys are dropped. Returns (bytes,
/// operations) in file order.
pub(crate) fn parse_io_stat(
    text: &str,
) -> std::result::Result<(Vec<BlkioEntry>, Vec<BlkioEntry>), String> {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(dev) = f.next() else {
            continue;
        };
        let (major, minor) =
            parse_dev(dev).ok_or_else(|| format!("bad device {dev:?} in line {line:?}"))?;
        for item in f {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let (table, op) = match key {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            let value = parse_value(value).map_err(|e| format!("line {line:?}: {e}"))?;
            table.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    Ok((bytes, ios))
}

/// A PSI file (`some avg10=.. avg60=.. avg300=.. total=..` and `full ...`).
pub(crate) fn parse_psi(text: &str) -> std::result::Result<Psi, String> {
    let mut psi = Psi::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let data = match f.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            None => continue,
            Some(other) => return Err(format!("unknown PSI line kind {other:?}")),
        };
        for item in f {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("malformed item {item:?} in {line:?}"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{item:?} in {line:?}: {e}");
            match k {
                "avg10" => data.avg10 = v.parse().map_err(|e| bad(&e))?,
                "avg60" => data.avg60 = v.parse().map_err(|e| bad(&e))?,
                "avg300" => data.avg300 = v.parse().map_err(|e| bad(&e))?,
                "total" => data.total = v.parse().map_err(|e| bad(&e))?,
                _ => {}
            }
        }
    }
    Ok(psi)
}

/// Huge page size from a control file name part (`2MB`, `1GB`, `64KB`):
/// the page sizes present are found by listing `dir` for files named
/// `hugetlb.<size>.<suffix>`.
pub(crate) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(os) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                field: FIELD.into(),
                os,
            })
        }
    };
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            let size = size.strip_suffix('.')?;
            (!size.is_empty() && !size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes.dedup();
    Ok(sizes)
}
