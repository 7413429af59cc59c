//! Statistics from a cgroup v2 directory, mapped onto the v1-shaped
//! [`Stats`] the way runc does. Files of controllers that are not enabled
//! for the cgroup are simply absent and skipped.

use std::path::Path;

use super::error::Result;
use super::stats::{
    hugetlb_sizes, keyed_get, parse_io_stat, parse_keyed, parse_list, parse_opt, parse_psi,
    read_pids, u64_opt, Cpu, CpuSet, Hugetlb, Memory, MemoryEntry, Stats,
};

/// Collect everything available in the cgroup directory `dir`.
pub(crate) fn stats(dir: &Path) -> Result<Stats> {
    let mut s = Stats {
        cpu: cpu(dir)?,
        memory: memory(dir)?,
        pids: read_pids(dir)?,
        ..Stats::default()
    };
    s.cpuset = CpuSet {
        cpus: parse_opt(dir, "cpuset.cpus.effective", parse_list)?.unwrap_or_default(),
        mems: parse_opt(dir, "cpuset.mems.effective", parse_list)?.unwrap_or_default(),
        ..CpuSet::default()
    };
    if let Some((bytes, ios)) = parse_opt(dir, "io.stat", parse_io_stat)? {
        s.blkio.io_service_bytes_recursive = bytes;
        s.blkio.io_serviced_recursive = ios;
    }
    s.blkio.psi = parse_opt(dir, "io.pressure", parse_psi)?;
    for size in hugetlb_sizes(dir, "current")? {
        let f = |what: &str| format!("hugetlb.{size}.{what}");
        let Some(usage) = u64_opt(dir, &f("current"))? else {
            continue;
        };
        let failcnt = parse_opt(dir, &f("events"), parse_keyed)?
            .and_then(|p| keyed_get(&p, "max"))
            .unwrap_or(0);
        s.hugetlb.insert(
            size,
            Hugetlb {
                usage,
                max: 0,
                failcnt,
            },
        );
    }
    Ok(s)
}

/// v2 `cpu.stat` (microseconds, converted to ns) and `cpu.pressure`.
pub(crate) fn cpu(dir: &Path) -> Result<Cpu> {
    let mut cpu = Cpu::default();
    if let Some(pairs) = parse_opt(dir, "cpu.stat", parse_keyed)? {
        let us = |k| keyed_get(&pairs, k).unwrap_or(0).saturating_mul(1000);
        cpu.usage.total = us("usage_usec");
        cpu.usage.user = us("user_usec");
        cpu.usage.kernel = us("system_usec");
        cpu.throttling.periods = keyed_get(&pairs, "nr_periods").unwrap_or(0);
        cpu.throttling.throttled_periods = keyed_get(&pairs, "nr_throttled").unwrap_or(0);
        cpu.throttling.throttled_time = us("throttled_usec");
    }
    cpu.psi = parse_opt(dir, "cpu.pressure", parse_psi)?;
    Ok(cpu)
}

/// The `max` count of a `*.events` file (times the limit was hit).
fn events_max(dir: &Path, file: &str) -> Result<u64> {
    Ok(parse_opt(dir, file, parse_keyed)?
        .and_then(|p| keyed_get(&p, "max"))
        .unwrap_or(0))
}

/// Memory: `memory.stat` (raw; cache = `file`), `memory.current/max/peak`,
/// `memory.swap.*` reported as memory+swap like v1's memsw (as runc does),
/// failcnt from the `max` count of `memory.events` / `memory.swap.events`.
pub(crate) fn memory(dir: &Path) -> Result<Memory> {
    let mut mem = Memory::default();
    if let Some(pairs) = parse_opt(dir, "memory.stat", parse_keyed)? {
        mem.raw = pairs.into_iter().collect();
        mem.cache = mem.raw.get("file").copied().unwrap_or(0);
    }
    mem.psi = parse_opt(dir, "memory.pressure", parse_psi)?;
    let Some(usage) = u64_opt(dir, "memory.current")? else {
        return Ok(mem);
    };
    mem.usage = MemoryEntry {
        usage,
        limit: u64_opt(dir, "memory.max")?.unwrap_or(u64::MAX),
        max: u64_opt(dir, "memory.peak")?.unwrap_or(0),
        failcnt: events_max(dir, "memory.events")?,
    };
    let swap_usage = u64_opt(dir, "memory.swap.current")?.unwrap_or(0);
    let swap_limit = u64_opt(dir, "memory.swap.max")?.unwrap_or(0);
    mem.swap = MemoryEntry {
        usage: swap_usage.saturating_add(mem.usage.usage),
        limit: if swap_limit == u64::MAX {
            u64::MAX
        } else {
            swap_limit.saturating_add(mem.usage.limit)
        },
        max: 0,
        failcnt: events_max(dir, "memory.swap.events")?,
    };
    Ok(mem)
}
