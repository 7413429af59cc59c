//! Statistics from cgroup v1 hierarchies. A controller that is not mounted
//! (not in the manager's paths) and files the kernel doesn't offer are
//! skipped; unreadable or malformed files are errors naming the file.

use std::path::Path;

use super::error::Result;
use super::stats::{
    clock_ticks, hugetlb_sizes, keyed_get, parse_blkio, parse_i64, parse_keyed, parse_list,
    parse_numbers, parse_opt, parse_usage_all, read_pids, ticks_to_ns, u64_opt, Blkio, BlkioEntry,
    Cpu, CpuSet, Hugetlb, Memory, MemoryEntry, Stats, Throttling,
};
use super::v1::V1Manager;

/// Collect everything available for `m`.
pub(crate) fn stats(m: &V1Manager) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(dir) = m.dir("cpuacct") {
        cpuacct(dir, &mut s.cpu)?;
    }
    if let Some(dir) = m.dir("cpu") {
        s.cpu.throttling = throttling(dir)?;
    }
    if let Some(dir) = m.dir("cpuset") {
        s.cpuset = cpuset(dir)?;
    }
    if let Some(dir) = m.dir("memory") {
        s.memory = memory(dir)?;
    }
    if let Some(dir) = m.dir("pids") {
        s.pids = read_pids(dir)?;
    }
    if let Some(dir) = m.dir("blkio") {
        s.blkio = blkio(dir)?;
    }
    if let Some(dir) = m.dir("hugetlb") {
        for size in hugetlb_sizes(dir, "usage_in_bytes")? {
            let f = |what: &str| format!("hugetlb.{size}.{what}");
            let entry = Hugetlb {
                usage: u64_opt(dir, &f("usage_in_bytes"))?.unwrap_or(0),
                max: u64_opt(dir, &f("max_usage_in_bytes"))?.unwrap_or(0),
                failcnt: u64_opt(dir, &f("failcnt"))?.unwrap_or(0),
            };
            s.hugetlb.insert(size, entry);
        }
    }
    Ok(s)
}

/// `cpuacct.*`: totals and per-CPU times (ns); user/system from
/// `cpuacct.stat` (USER_HZ ticks, converted to ns).
pub(crate) fn cpuacct(dir: &Path, cpu: &mut Cpu) -> Result<()> {
    let u = &mut cpu.usage;
    if let Some(v) = u64_opt(dir, "cpuacct.usage")? {
        u.total = v;
    }
    if let Some(v) = parse_opt(dir, "cpuacct.usage_percpu", parse_numbers)? {
        u.percpu = v;
    }
    let sys = parse_opt(dir, "cpuacct.usage_percpu_sys", parse_numbers)?;
    let user = parse_opt(dir, "cpuacct.usage_percpu_user", parse_numbers)?;
    match (sys, user) {
        (Some(sys), Some(user)) => {
            u.percpu_kernel = sys;
            u.percpu_user = user;
        }
        _ => {
            if let Some((sys, user)) = parse_opt(dir, "cpuacct.usage_all", parse_usage_all)? {
                u.percpu_kernel = sys;
                u.percpu_user = user;
            }
        }
    }
    if let Some(pairs) = parse_opt(dir, "cpuacct.stat", parse_keyed)? {
        let hz = clock_ticks();
        u.user = ticks_to_ns(keyed_get(&pairs, "user").unwrap_or(0), hz);
        u.kernel = ticks_to_ns(keyed_get(&pairs, "system").unwrap_or(0), hz);
    }
    Ok(())
}

/// v1 `cpu.stat` (`nr_periods`, `nr_throttled`, `throttled_time` in ns).
pub(crate) fn throttling(dir: &Path) -> Result<Throttling> {
    let Some(pairs) = parse_opt(dir, "cpu.stat", parse_keyed)? else {
        return Ok(Throttling::default());
    };
    let get = |k| keyed_get(&pairs, k).unwrap_or(0);
    Ok(Throttling {
        periods: get("nr_periods"),
        throttled_periods: get("nr_throttled"),
        throttled_time: get("throttled_time"),
    })
}

fn cpuset(dir: &Path) -> Result<CpuSet> {
    let flag =
        |name: &str| -> Result<u64> { Ok(u64_opt(dir, &format!("cpuset.{name}"))?.unwrap_or(0)) };
    Ok(CpuSet {
        cpus: parse_opt(dir, "cpuset.cpus", parse_list)?.unwrap_or_default(),
        mems: parse_opt(dir, "cpuset.mems", parse_list)?.unwrap_or_default(),
        cpu_exclusive: flag("cpu_exclusive")?,
        mem_hardwall: flag("mem_hardwall")?,
        mem_exclusive: flag("mem_exclusive")?,
        memory_migrate: flag("memory_migrate")?,
        memory_spread_page: flag("memory_spread_page")?,
        memory_spread_slab: flag("memory_spread_slab")?,
        memory_pressure: flag("memory_pressure")?,
        sched_load_balance: flag("sched_load_balance")?,
        sched_relax_domain_level: parse_opt(dir, "cpuset.sched_relax_domain_level", parse_i64)?
            .unwrap_or(0),
    })
}

/// `memory.<prefix>usage_in_bytes` and friends; default (all zero) if the
/// family is absent (e.g. no swap accounting).
fn memory_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry> {
    let f = |what: &str| format!("memory.{prefix}{what}");
    let Some(usage) = u64_opt(dir, &f("usage_in_bytes"))? else {
        return Ok(MemoryEntry::default());
    };
    Ok(MemoryEntry {
        usage,
        max: u64_opt(dir, &f("max_usage_in_bytes"))?.unwrap_or(0),
        failcnt: u64_opt(dir, &f("failcnt"))?.unwrap_or(0),
        limit: u64_opt(dir, &f("limit_in_bytes"))?.unwrap_or(0),
    })
}

pub(crate) fn memory(dir: &Path) -> Result<Memory> {
    let mut mem = Memory::default();
    if let Some(pairs) = parse_opt(dir, "memory.stat", parse_keyed)? {
        mem.raw = pairs.into_iter().collect();
        mem.cache = mem.raw.get("cache").copied().unwrap_or(0);
    }
    mem.usage = memory_entry(dir, "")?;
    mem.swap = memory_entry(dir, "memsw.")?;
    mem.kernel = memory_entry(dir, "kmem.")?;
    mem.kernel_tcp = memory_entry(dir, "kmem.tcp.")?;
    Ok(mem)
}

/// The first of `files` that exists and has entries (or the last existing
/// one, empty). Throttle-layer counters see all I/O of the cgroup; the
/// CFQ/BFQ ones only I/O scheduled by that elevator.
fn blkio_table(dir: &Path, files: &[&str]) -> Result<Vec<BlkioEntry>> {
    let mut out = Vec::new();
    for file in files {
        if let Some(entries) = parse_opt(dir, file, parse_blkio)? {
            if !entries.is_empty() {
                return Ok(entries);
            }
            out = entries;
        }
    }
    Ok(out)
}

pub(crate) fn blkio(dir: &Path) -> Result<Blkio> {
    // Tables only the CFQ/BFQ schedulers provide.
    let sched = |name: &str| -> Result<Vec<BlkioEntry>> {
        blkio_table(
            dir,
            &[
                &format!("blkio.{name}_recursive"),
                &format!("blkio.bfq.{name}_recursive"),
            ],
        )
    };
    Ok(Blkio {
        io_service_bytes_recursive: blkio_table(
            dir,
            &[
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
                "blkio.io_service_bytes_recursive",
                "blkio.bfq.io_service_bytes_recursive",
            ],
        )?,
        io_serviced_recursive: blkio_table(
            dir,
            &[
                "blkio.throttle.io_serviced_recursive",
                "blkio.throttle.io_serviced",
                "blkio.io_serviced_recursive",
                "blkio.bfq.io_serviced_recursive",
            ],
        )?,
        io_queued_recursive: sched("io_queued")?,
        io_service_time_recursive: sched("io_service_time")?,
        io_wait_time_recursive: sched("io_wait_time")?,
        io_merged_recursive: sched("io_merged")?,
        io_time_recursive: sched("time")?,
        sectors_recursive: sched("sectors")?,
        psi: None,
    })
}
