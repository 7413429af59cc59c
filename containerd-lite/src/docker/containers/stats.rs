//! `GET /containers/{id}/stats`: a running container's resource usage in
//! docker's shape, from the shim's cgroup metrics (v1 or v2), the host's
//! CPU time from `/proc/stat` (the CLI's CPU % is the container's share of
//! it), and the network counters of the container's namespace.
//!
//! Streamed, a sample a second, each carrying the previous one as
//! `precpu_stats`; `stream=false` answers one sample with a previous one a
//! second older (what `docker stats --no-stream` needs for a CPU %), or
//! with `one-shot=true` at once without it. A container that is not
//! running answers one empty sample, as with dockerd.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use containerd_shim_protos::api;
use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::Message;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::registry::Container;
use super::Status;
use crate::docker::error::ApiResult;
use crate::docker::query::Query;
use crate::docker::{Frontend, NAMESPACE};
use crate::runtime::shim::{ctx, status_error};
use crate::{Error, Result};

/// Between two samples of a stream.
const INTERVAL: Duration = Duration::from_secs(1);

/// Nanoseconds per clock tick of `/proc/stat` (USER_HZ is 100 on Linux).
const NANOS_PER_TICK: u64 = 10_000_000;

/// `GET /containers/{id}/stats?stream=&one-shot=`.
pub async fn stats(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let stream = query.get("stream").is_none_or(|_| query.flag("stream"));
    let one_shot = query.flag("one-shot");
    if one_shot && stream {
        return Err(Error::invalid("cannot have stream=true and one-shot=true").into());
    }
    let container = frontend.containers.resolve(&id)?;
    if container.status() != Status::Running {
        return Ok(json_lines(futures::stream::once(async move {
            Ok(line(&empty(&container)))
        })));
    }
    if !stream {
        let previous = if one_shot {
            None
        } else {
            let first = sample(&frontend, &container).await?;
            tokio::time::sleep(INTERVAL).await;
            Some(first)
        };
        let current = sample(&frontend, &container).await?;
        let body = line(&current.to_json(&container, previous.as_ref()));
        return Ok(json_lines(futures::stream::once(async move { Ok(body) })));
    }
    let output = futures::stream::unfold(
        (frontend, container, None::<Sample>, true),
        |(frontend, container, previous, first)| async move {
            if !first {
                tokio::time::sleep(INTERVAL).await;
            }
            if container.status() != Status::Running {
                return None;
            }
            let current = match sample(&frontend, &container).await {
                Ok(current) => current,
                Err(err) => {
                    tracing::debug!(id = %container.id, "stats: {err}");
                    return None;
                }
            };
            let body = line(&current.to_json(&container, previous.as_ref()));
            Some((Ok(body), (frontend, container, Some(current), false)))
        },
    );
    Ok(json_lines(output))
}

fn json_lines(
    output: impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
) -> Response {
    let mut response = Response::new(Body::from_stream(output));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn line(value: &Value) -> bytes::Bytes {
    let mut text = value.to_string();
    text.push('\n');
    bytes::Bytes::from(text)
}

/// The answer for a container that is not running.
fn empty(container: &Container) -> Value {
    json!({
        "name": container.record().slash_name(),
        "id": container.id,
        "read": "0001-01-01T00:00:00Z",
        "preread": "0001-01-01T00:00:00Z",
        "pids_stats": {},
        "blkio_stats": {},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": { "cpu_usage": { "total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0 }, "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 } },
        "precpu_stats": { "cpu_usage": { "total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0 }, "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 } },
        "memory_stats": {},
    })
}

/// One reading.
#[derive(Debug, Clone)]
struct Sample {
    read: SystemTime,
    /// `cpu_stats`, `memory_stats`, `pids_stats`, `blkio_stats`.
    cgroup: CgroupStats,
    /// The host's CPU time, nanoseconds.
    system_cpu: u64,
    online_cpus: u64,
    networks: Option<Value>,
}

#[derive(Debug, Clone, Default)]
struct CgroupStats {
    cpu: Value,
    memory: Value,
    pids: Value,
    blkio: Value,
}

impl Sample {
    fn cpu_stats(&self) -> Value {
        let mut cpu = self.cgroup.cpu.clone();
        if let Some(object) = cpu.as_object_mut() {
            object.insert("system_cpu_usage".into(), json!(self.system_cpu));
            object.insert("online_cpus".into(), json!(self.online_cpus));
        }
        cpu
    }

    fn to_json(&self, container: &Container, previous: Option<&Sample>) -> Value {
        let mut body = json!({
            "name": container.record().slash_name(),
            "id": container.id,
            "read": rfc3339_nanos(self.read),
            "preread": previous.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), |p| rfc3339_nanos(p.read)),
            "pids_stats": self.cgroup.pids,
            "blkio_stats": self.cgroup.blkio,
            "num_procs": 0,
            "storage_stats": {},
            "cpu_stats": self.cpu_stats(),
            "precpu_stats": previous.map_or_else(|| json!({ "cpu_usage": { "total_usage": 0 }, "throttling_data": {} }), Sample::cpu_stats),
            "memory_stats": self.cgroup.memory,
        });
        if let (Some(networks), Some(object)) = (&self.networks, body.as_object_mut()) {
            object.insert("networks".into(), networks.clone());
        }
        body
    }
}

fn rfc3339_nanos(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Reads the container's metrics from its shim, and the host's CPU time.
async fn sample(frontend: &Frontend, container: &Arc<Container>) -> Result<Sample> {
    let task = frontend.backend.tasks.get(NAMESPACE, &container.id)?;
    let stats = task
        .client()
        .stats(
            ctx(),
            &api::StatsRequest {
                id: container.id.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|err| status_error(err).context(format!("stats of {}", container.id)))?;
    let any = stats
        .stats
        .into_option()
        .ok_or_else(|| Error::internal(format!("stats of {}: the shim sent none", container.id)))?;
    let machine_memory = machine_memory();
    let cgroup = if any.type_url.ends_with("cgroups.v2.Metrics") {
        let metrics = v2::Metrics::parse_from_bytes(&any.value)
            .map_err(|err| Error::internal(format!("decoding v2 metrics: {err}")))?;
        from_v2(&metrics, machine_memory)
    } else {
        let metrics = v1::Metrics::parse_from_bytes(&any.value)
            .map_err(|err| Error::internal(format!("decoding v1 metrics: {err}")))?;
        from_v1(&metrics, machine_memory)
    };
    let pid = task.pid();
    let host_network = container.record().host_config.network_mode.as_deref() == Some("host");
    let (system_cpu, online_cpus, networks) = tokio::task::spawn_blocking(move || {
        let (system_cpu, online_cpus) = host_cpu();
        let networks = (!host_network).then(|| network_stats(pid)).flatten();
        (system_cpu, online_cpus, networks)
    })
    .await
    .map_err(|err| Error::internal(format!("reading host stats: {err}")))?;
    Ok(Sample {
        read: SystemTime::now(),
        cgroup,
        system_cpu,
        online_cpus,
        networks,
    })
}

/// A memory limit as docker reports it: no limit (or one above the
/// machine's memory) is the machine's memory.
fn memory_limit(limit: u64, machine_memory: u64) -> u64 {
    if limit == 0 || (machine_memory > 0 && limit > machine_memory) {
        machine_memory
    } else {
        limit
    }
}

fn from_v1(m: &v1::Metrics, machine_memory: u64) -> CgroupStats {
    let usage = m.cpu.usage.get_or_default();
    let throttling = m.cpu.throttling.get_or_default();
    let memory = m.memory.get_or_default();
    let mem_usage = memory.usage.get_or_default();
    let stat_pairs = [
        ("active_anon", memory.active_anon),
        ("active_file", memory.active_file),
        ("cache", memory.cache),
        ("dirty", memory.dirty),
        (
            "hierarchical_memory_limit",
            memory.hierarchical_memory_limit,
        ),
        ("hierarchical_memsw_limit", memory.hierarchical_swap_limit),
        ("inactive_anon", memory.inactive_anon),
        ("inactive_file", memory.inactive_file),
        ("mapped_file", memory.mapped_file),
        ("pgfault", memory.pg_fault),
        ("pgmajfault", memory.pg_maj_fault),
        ("pgpgin", memory.pg_pg_in),
        ("pgpgout", memory.pg_pg_out),
        ("rss", memory.rss),
        ("rss_huge", memory.rss_huge),
        ("total_active_anon", memory.total_active_anon),
        ("total_active_file", memory.total_active_file),
        ("total_cache", memory.total_cache),
        ("total_dirty", memory.total_dirty),
        ("total_inactive_anon", memory.total_inactive_anon),
        ("total_inactive_file", memory.total_inactive_file),
        ("total_mapped_file", memory.total_mapped_file),
        ("total_pgfault", memory.total_pg_fault),
        ("total_pgmajfault", memory.total_pg_maj_fault),
        ("total_pgpgin", memory.total_pg_pg_in),
        ("total_pgpgout", memory.total_pg_pg_out),
        ("total_rss", memory.total_rss),
        ("total_rss_huge", memory.total_rss_huge),
        ("total_unevictable", memory.total_unevictable),
        ("total_writeback", memory.total_writeback),
        ("unevictable", memory.unevictable),
        ("writeback", memory.writeback),
    ];
    let blkio_entries = |entries: &[v1::BlkIOEntry]| -> Value {
        Value::Array(
            entries
                .iter()
                .map(
                    |e| json!({ "major": e.major, "minor": e.minor, "op": e.op, "value": e.value }),
                )
                .collect(),
        )
    };
    let blkio = m.blkio.get_or_default();
    let pids = m.pids.get_or_default();
    CgroupStats {
        cpu: json!({
            "cpu_usage": {
                "total_usage": usage.total,
                "percpu_usage": usage.per_cpu,
                "usage_in_kernelmode": usage.kernel,
                "usage_in_usermode": usage.user,
            },
            "throttling_data": {
                "periods": throttling.periods,
                "throttled_periods": throttling.throttled_periods,
                "throttled_time": throttling.throttled_time,
            },
        }),
        memory: json!({
            "usage": mem_usage.usage,
            "max_usage": mem_usage.max,
            "failcnt": mem_usage.failcnt,
            "limit": memory_limit(mem_usage.limit, machine_memory),
            "stats": stat_pairs.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<Map<_, _>>(),
        }),
        pids: pids_json(pids.current, pids.limit),
        blkio: json!({
            "io_service_bytes_recursive": blkio_entries(&blkio.io_service_bytes_recursive),
            "io_serviced_recursive": blkio_entries(&blkio.io_serviced_recursive),
            "io_queue_recursive": blkio_entries(&blkio.io_queued_recursive),
            "io_service_time_recursive": blkio_entries(&blkio.io_service_time_recursive),
            "io_wait_time_recursive": blkio_entries(&blkio.io_wait_time_recursive),
            "io_merged_recursive": blkio_entries(&blkio.io_merged_recursive),
            "io_time_recursive": blkio_entries(&blkio.io_time_recursive),
            "sectors_recursive": blkio_entries(&blkio.sectors_recursive),
        }),
    }
}

fn from_v2(m: &v2::Metrics, machine_memory: u64) -> CgroupStats {
    let cpu = m.cpu.get_or_default();
    let memory = m.memory.get_or_default();
    let pids = m.pids.get_or_default();
    let stat_pairs = [
        ("anon", memory.anon),
        ("file", memory.file),
        ("kernel_stack", memory.kernel_stack),
        ("slab", memory.slab),
        ("sock", memory.sock),
        ("shmem", memory.shmem),
        ("file_mapped", memory.file_mapped),
        ("file_dirty", memory.file_dirty),
        ("file_writeback", memory.file_writeback),
        ("anon_thp", memory.anon_thp),
        ("inactive_anon", memory.inactive_anon),
        ("active_anon", memory.active_anon),
        ("inactive_file", memory.inactive_file),
        ("active_file", memory.active_file),
        ("unevictable", memory.unevictable),
        ("slab_reclaimable", memory.slab_reclaimable),
        ("slab_unreclaimable", memory.slab_unreclaimable),
        ("pgfault", memory.pgfault),
        ("pgmajfault", memory.pgmajfault),
        ("workingset_refault", memory.workingset_refault),
        ("workingset_activate", memory.workingset_activate),
        ("workingset_nodereclaim", memory.workingset_nodereclaim),
        ("pgrefill", memory.pgrefill),
        ("pgscan", memory.pgscan),
        ("pgsteal", memory.pgsteal),
        ("pgactivate", memory.pgactivate),
        ("pgdeactivate", memory.pgdeactivate),
        ("pglazyfree", memory.pglazyfree),
        ("pglazyfreed", memory.pglazyfreed),
        ("thp_fault_alloc", memory.thp_fault_alloc),
        ("thp_collapse_alloc", memory.thp_collapse_alloc),
    ];
    let io = m.io.get_or_default();
    let service_bytes: Vec<Value> = io
        .usage
        .iter()
        .flat_map(|e| {
            [
                json!({ "major": e.major, "minor": e.minor, "op": "read", "value": e.rbytes }),
                json!({ "major": e.major, "minor": e.minor, "op": "write", "value": e.wbytes }),
            ]
        })
        .collect();
    CgroupStats {
        cpu: json!({
            "cpu_usage": {
                "total_usage": cpu.usage_usec.saturating_mul(1000),
                "usage_in_kernelmode": cpu.system_usec.saturating_mul(1000),
                "usage_in_usermode": cpu.user_usec.saturating_mul(1000),
            },
            "throttling_data": {
                "periods": cpu.nr_periods,
                "throttled_periods": cpu.nr_throttled,
                "throttled_time": cpu.throttled_usec.saturating_mul(1000),
            },
        }),
        memory: json!({
            "usage": memory.usage,
            "limit": memory_limit(memory.usage_limit, machine_memory),
            "stats": stat_pairs.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<Map<_, _>>(),
        }),
        pids: pids_json(pids.current, pids.limit),
        blkio: json!({
            "io_service_bytes_recursive": service_bytes,
            "io_serviced_recursive": Value::Null,
            "io_queue_recursive": Value::Null,
            "io_service_time_recursive": Value::Null,
            "io_wait_time_recursive": Value::Null,
            "io_merged_recursive": Value::Null,
            "io_time_recursive": Value::Null,
            "sectors_recursive": Value::Null,
        }),
    }
}

fn pids_json(current: u64, limit: u64) -> Value {
    // No limit is reported as none (the kernel's "max").
    if limit == 0 || limit == u64::MAX {
        json!({ "current": current })
    } else {
        json!({ "current": current, "limit": limit })
    }
}

/// The host's CPU time in nanoseconds (the `cpu` line of `/proc/stat`)
/// and the number of CPUs online.
fn host_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_proc_stat(&stat)
}

fn parse_proc_stat(stat: &str) -> (u64, u64) {
    let total = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|fields| {
            fields
                .split_whitespace()
                .take(8)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum::<u64>()
        })
        .unwrap_or(0);
    let cpus = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64;
    (total.saturating_mul(NANOS_PER_TICK), cpus)
}

/// The machine's memory in bytes (`MemTotal`).
fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The counters of every interface but `lo` in the namespace of `pid`,
/// by name (`None` when it has no other).
fn network_stats(pid: u32) -> Option<Value> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    parse_net_dev(&dev)
}

fn parse_net_dev(dev: &str) -> Option<Value> {
    let mut networks = Map::new();
    for line in dev.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let n: Vec<u64> = counters
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if n.len() < 12 {
            continue;
        }
        networks.insert(
            name.to_owned(),
            json!({
                "rx_bytes": n[0], "rx_packets": n[1], "rx_errors": n[2], "rx_dropped": n[3],
                "tx_bytes": n[8], "tx_packets": n[9], "tx_errors": n[10], "tx_dropped": n[11],
            }),
        );
    }
    (!networks.is_empty()).then_some(Value::Object(networks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cpu_time_is_the_first_eight_fields_in_nanoseconds() {
        let stat = "cpu  10 20 30 40 50 60 70 80 90 100\ncpu0 1 2 3 4 5 6 7 8\ncpu1 1 2 3 4 5 6 7 8\nintr 5\n";
        assert_eq!(parse_proc_stat(stat), (360 * NANOS_PER_TICK, 2));
    }

    #[test]
    fn network_counters_skip_lo() {
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  eth0:    1500      10    1    2    0     0          0         0      700       5    3    4    0     0       0          0\n";
        let parsed = parse_net_dev(dev).unwrap();
        assert_eq!(
            parsed,
            json!({ "eth0": { "rx_bytes": 1500, "rx_packets": 10, "rx_errors": 1, "rx_dropped": 2,
                              "tx_bytes": 700, "tx_packets": 5, "tx_errors": 3, "tx_dropped": 4 } })
        );
        assert_eq!(
            parse_net_dev(&dev.lines().take(3).collect::<Vec<_>>().join("\n")),
            None
        );
    }

    #[test]
    fn v2_metrics_become_docker_stats() {
        let mut metrics = v2::Metrics::new();
        let mut cpu = v2::CPUStat::new();
        cpu.usage_usec = 1500;
        cpu.user_usec = 1000;
        cpu.system_usec = 500;
        metrics.cpu = Some(cpu).into();
        let mut memory = v2::MemoryStat::new();
        memory.usage = 4096;
        memory.usage_limit = u64::MAX;
        memory.inactive_file = 1024;
        metrics.memory = Some(memory).into();
        let mut pids = v2::PidsStat::new();
        pids.current = 3;
        pids.limit = 100;
        metrics.pids = Some(pids).into();
        let mut io = v2::IOStat::new();
        let mut entry = v2::IOEntry::new();
        entry.major = 8;
        entry.rbytes = 10;
        entry.wbytes = 20;
        io.usage.push(entry);
        metrics.io = Some(io).into();

        let stats = from_v2(&metrics, 1 << 30);
        assert_eq!(stats.cpu["cpu_usage"]["total_usage"], 1_500_000);
        assert_eq!(stats.cpu["cpu_usage"]["usage_in_usermode"], 1_000_000);
        assert_eq!(stats.memory["usage"], 4096);
        assert_eq!(
            stats.memory["limit"],
            1u64 << 30,
            "no limit: the machine's memory"
        );
        assert_eq!(stats.memory["stats"]["inactive_file"], 1024);
        assert_eq!(stats.pids, json!({ "current": 3, "limit": 100 }));
        assert_eq!(
            stats.blkio["io_service_bytes_recursive"][1],
            json!({ "major": 8, "minor": 0, "op": "write", "value": 20 })
        );
    }

    #[test]
    fn v1_metrics_become_docker_stats() {
        let mut metrics = v1::Metrics::new();
        let mut usage = v1::CPUUsage::new();
        usage.total = 123;
        usage.per_cpu = vec![100, 23];
        let mut cpu = v1::CPUStat::new();
        cpu.usage = Some(usage).into();
        metrics.cpu = Some(cpu).into();
        let mut memory = v1::MemoryStat::new();
        let mut entry = v1::MemoryEntry::new();
        entry.usage = 8192;
        entry.limit = 64 << 20;
        memory.usage = Some(entry).into();
        memory.total_inactive_file = 100;
        metrics.memory = Some(memory).into();

        let stats = from_v1(&metrics, 1 << 30);
        assert_eq!(stats.cpu["cpu_usage"]["percpu_usage"], json!([100, 23]));
        assert_eq!(stats.memory["limit"], 64u64 << 20);
        assert_eq!(stats.memory["stats"]["total_inactive_file"], 100);
        assert_eq!(stats.pids, json!({ "current": 0 }));
    }
}
