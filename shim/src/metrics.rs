//! Container metrics for `Stats`: read from the init process's cgroup with
//! berth's cgroup library (whatever runtime created it) and shaped as
//! containerd's cgroup v1 or v2 metrics messages, which `ctr task metrics`
//! decodes by type URL.

use crate::error::{Error, Result};
use crate::events::to_any;
use berth_runtime::cgroups::{self, CgroupState, Stats};
use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;

/// Metrics of the cgroup `pid` is in.
pub fn collect(pid: i32) -> Result<Any> {
    let manager =
        cgroups::for_pid(pid).map_err(|e| Error::internal(format!("cgroup of pid {pid}: {e}")))?;
    let stats = manager
        .stats()
        .map_err(|e| Error::internal(format!("cgroup stats of pid {pid}: {e}")))?;
    Ok(match manager.state() {
        CgroupState::V1 { .. } => to_any(&to_v1(&stats)),
        CgroupState::V2 { .. } => to_any(&to_v2(&stats)),
    })
}

fn raw(stats: &Stats, key: &str) -> u64 {
    stats.memory.raw.get(key).copied().unwrap_or(0)
}

fn v1_entry(e: &cgroups::stats::MemoryEntry) -> MessageField<v1::MemoryEntry> {
    MessageField::some(v1::MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max,
        failcnt: e.failcnt,
        ..Default::default()
    })
}

fn v1_blkio(entries: &[cgroups::stats::BlkioEntry]) -> Vec<v1::BlkIOEntry> {
    entries
        .iter()
        .map(|e| v1::BlkIOEntry {
            op: e.op.clone(),
            major: e.major,
            minor: e.minor,
            value: e.value,
            ..Default::default()
        })
        .collect()
}

pub fn to_v1(s: &Stats) -> v1::Metrics {
    let m = &s.memory;
    v1::Metrics {
        pids: MessageField::some(v1::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: s.cpu.usage.total,
                kernel: s.cpu.usage.kernel,
                user: s.cpu.usage.user,
                per_cpu: s.cpu.usage.percpu.clone(),
                ..Default::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                periods: s.cpu.throttling.periods,
                throttled_periods: s.cpu.throttling.throttled_periods,
                throttled_time: s.cpu.throttling.throttled_time,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(v1::MemoryStat {
            cache: m.cache,
            rss: raw(s, "rss"),
            rss_huge: raw(s, "rss_huge"),
            mapped_file: raw(s, "mapped_file"),
            dirty: raw(s, "dirty"),
            writeback: raw(s, "writeback"),
            pg_pg_in: raw(s, "pgpgin"),
            pg_pg_out: raw(s, "pgpgout"),
            pg_fault: raw(s, "pgfault"),
            pg_maj_fault: raw(s, "pgmajfault"),
            inactive_anon: raw(s, "inactive_anon"),
            active_anon: raw(s, "active_anon"),
            inactive_file: raw(s, "inactive_file"),
            active_file: raw(s, "active_file"),
            unevictable: raw(s, "unevictable"),
            hierarchical_memory_limit: raw(s, "hierarchical_memory_limit"),
            hierarchical_swap_limit: raw(s, "hierarchical_memsw_limit"),
            total_cache: raw(s, "total_cache"),
            total_rss: raw(s, "total_rss"),
            total_rss_huge: raw(s, "total_rss_huge"),
            total_mapped_file: raw(s, "total_mapped_file"),
            total_dirty: raw(s, "total_dirty"),
            total_writeback: raw(s, "total_writeback"),
            total_pg_pg_in: raw(s, "total_pgpgin"),
            total_pg_pg_out: raw(s, "total_pgpgout"),
            total_pg_fault: raw(s, "total_pgfault"),
            total_pg_maj_fault: raw(s, "total_pgmajfault"),
            total_inactive_anon: raw(s, "total_inactive_anon"),
            total_active_anon: raw(s, "total_active_anon"),
            total_inactive_file: raw(s, "total_inactive_file"),
            total_active_file: raw(s, "total_active_file"),
            total_unevictable: raw(s, "total_unevictable"),
            usage: v1_entry(&m.usage),
            swap: v1_entry(&m.swap),
            kernel: v1_entry(&m.kernel),
            kernel_tcp: v1_entry(&m.kernel_tcp),
            ..Default::default()
        }),
        blkio: MessageField::some(v1::BlkIOStat {
            io_service_bytes_recursive: v1_blkio(&s.blkio.io_service_bytes_recursive),
            io_serviced_recursive: v1_blkio(&s.blkio.io_serviced_recursive),
            io_queued_recursive: v1_blkio(&s.blkio.io_queued_recursive),
            io_service_time_recursive: v1_blkio(&s.blkio.io_service_time_recursive),
            io_wait_time_recursive: v1_blkio(&s.blkio.io_wait_time_recursive),
            io_merged_recursive: v1_blkio(&s.blkio.io_merged_recursive),
            io_time_recursive: v1_blkio(&s.blkio.io_time_recursive),
            sectors_recursive: v1_blkio(&s.blkio.sectors_recursive),
            ..Default::default()
        }),
        hugetlb: s
            .hugetlb
            .iter()
            .map(|(size, h)| v1::HugetlbStat {
                usage: h.usage,
                max: h.max,
                failcnt: h.failcnt,
                pagesize: size.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn to_v2(s: &Stats) -> v2::Metrics {
    let m = &s.memory;
    let limit = |v: u64| if v == u64::MAX { 0 } else { v };
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: s.cpu.usage.total / 1000,
            user_usec: s.cpu.usage.user / 1000,
            system_usec: s.cpu.usage.kernel / 1000,
            nr_periods: s.cpu.throttling.periods,
            nr_throttled: s.cpu.throttling.throttled_periods,
            throttled_usec: s.cpu.throttling.throttled_time / 1000,
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            anon: raw(s, "anon"),
            file: raw(s, "file"),
            kernel_stack: raw(s, "kernel_stack"),
            slab: raw(s, "slab"),
            sock: raw(s, "sock"),
            shmem: raw(s, "shmem"),
            file_mapped: raw(s, "file_mapped"),
            file_dirty: raw(s, "file_dirty"),
            file_writeback: raw(s, "file_writeback"),
            anon_thp: raw(s, "anon_thp"),
            inactive_anon: raw(s, "inactive_anon"),
            active_anon: raw(s, "active_anon"),
            inactive_file: raw(s, "inactive_file"),
            active_file: raw(s, "active_file"),
            unevictable: raw(s, "unevictable"),
            slab_reclaimable: raw(s, "slab_reclaimable"),
            slab_unreclaimable: raw(s, "slab_unreclaimable"),
            pgfault: raw(s, "pgfault"),
            pgmajfault: raw(s, "pgmajfault"),
            workingset_refault: raw(s, "workingset_refault"),
            workingset_activate: raw(s, "workingset_activate"),
            workingset_nodereclaim: raw(s, "workingset_nodereclaim"),
            pgrefill: raw(s, "pgrefill"),
            pgscan: raw(s, "pgscan"),
            pgsteal: raw(s, "pgsteal"),
            pgactivate: raw(s, "pgactivate"),
            pgdeactivate: raw(s, "pgdeactivate"),
            pglazyfree: raw(s, "pglazyfree"),
            pglazyfreed: raw(s, "pglazyfreed"),
            thp_fault_alloc: raw(s, "thp_fault_alloc"),
            thp_collapse_alloc: raw(s, "thp_collapse_alloc"),
            usage: m.usage.usage,
            usage_limit: limit(m.usage.limit),
            swap_usage: m.swap.usage,
            swap_limit: limit(m.swap.limit),
            max_usage: m.usage.max,
            swap_max_usage: m.swap.max,
            ..Default::default()
        }),
        hugetlb: s
            .hugetlb
            .iter()
            .map(|(size, h)| v2::HugeTlbStat {
                current: h.usage,
                max: h.max,
                pagesize: size.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_main_figures() {
        let mut s = Stats::default();
        s.pids.current = 3;
        s.cpu.usage.total = 5_000_000;
        s.memory.usage.usage = 4096;
        s.memory.raw.insert("rss".into(), 1024);
        s.memory.raw.insert("anon".into(), 2048);
        let v1 = to_v1(&s);
        assert_eq!(v1.pids.current, 3);
        assert_eq!(v1.cpu.usage.total, 5_000_000);
        assert_eq!(v1.memory.rss, 1024);
        assert_eq!(v1.memory.usage.usage, 4096);
        let v2 = to_v2(&s);
        assert_eq!(v2.cpu.usage_usec, 5000);
        assert_eq!(v2.memory.anon, 2048);
        assert_eq!(v2.memory.usage, 4096);
        assert_eq!(to_any(&v1).type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(to_any(&v2).type_url, "io.containerd.cgroups.v2.Metrics");
    }
}
