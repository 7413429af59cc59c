//! Pure conversions from OCI values to the strings cgroup files expect.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxDeviceCgroup, LinuxResources, LinuxWeightDeviceBuilder,
};

use super::error::{Error, Result};

/// `r` with the values runc reads as "not set" removed: zero limits,
/// shares, quotas, periods, weights and class ids, empty cpu and memory
/// node lists. (A zero pids limit stays: it writes "max".) Docker, for one, sends `blockIO.weight: 0`
/// and zero memory limits for a container that sets none; writing them
/// would fail (no blkio weight without BFQ) or impose a limit of 0.
pub(crate) fn without_unset_values(r: &LinuxResources) -> LinuxResources {
    fn set<T: PartialEq + Copy>(v: Option<T>, unset: T) -> Option<T> {
        v.filter(|v| *v != unset)
    }
    let mut r = r.clone();
    if let Some(old) = *r.memory() {
        let mut m = old;
        m.set_limit(set(old.limit(), 0))
            .set_reservation(set(old.reservation(), 0))
            .set_swap(set(old.swap(), 0))
            .set_kernel(set(old.kernel(), 0))
            .set_kernel_tcp(set(old.kernel_tcp(), 0));
        r.set_memory(Some(m));
    }
    if let Some(old) = r.cpu().clone() {
        let mut c = old.clone();
        c.set_shares(set(old.shares(), 0))
            .set_quota(set(old.quota(), 0))
            .set_period(set(old.period(), 0))
            .set_realtime_period(set(old.realtime_period(), 0))
            .set_realtime_runtime(set(old.realtime_runtime(), 0))
            .set_cpus(old.cpus().clone().filter(|s| !s.is_empty()))
            .set_mems(old.mems().clone().filter(|s| !s.is_empty()));
        r.set_cpu(Some(c));
    }
    if let Some(old) = r.block_io().clone() {
        let mut b = old.clone();
        let devices = old.weight_device().clone().map(|list| {
            list.into_iter()
                .map(|d| {
                    let mut b = LinuxWeightDeviceBuilder::default()
                        .major(d.major())
                        .minor(d.minor());
                    if let Some(w) = set(d.weight(), 0) {
                        b = b.weight(w);
                    }
                    if let Some(w) = set(d.leaf_weight(), 0) {
                        b = b.leaf_weight(w);
                    }
                    // (Every field has its default: building cannot fail.)
                    b.build().unwrap_or(d)
                })
                .collect()
        });
        b.set_weight(set(old.weight(), 0))
            .set_leaf_weight(set(old.leaf_weight(), 0))
            .set_weight_device(devices);
        r.set_block_io(Some(b));
    }
    if let Some(old) = r.network().clone() {
        let mut n = old.clone();
        n.set_class_id(set(old.class_id(), 0));
        r.set_network(Some(n));
    }
    r
}

/// Default CFS period (µs) used on v2 when only a quota is given.
pub(crate) const DEFAULT_CPU_PERIOD: u64 = 100_000;

pub(crate) fn invalid(field: &str, value: impl ToString, reason: &str) -> Error {
    Error::InvalidValue {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// v2 "max"-or-number: negative means unlimited.
pub(crate) fn v2_limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// v1 limit: -1 (any negative) means unlimited, written as "-1".
pub(crate) fn v1_limit(v: i64) -> String {
    if v < 0 {
        "-1".to_string()
    } else {
        v.to_string()
    }
}

/// `pids.max`: zero or negative means no limit.
pub(crate) fn pids_max(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

/// cpu.shares (v1, 2..262144) to cpu.weight (v2, 1..10000).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000).
pub(crate) fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// v2 `cpu.max`: "QUOTA PERIOD", quota negative/unset => "max".
pub(crate) fn cpu_max(quota: Option<i64>, period: Option<u64>) -> String {
    let quota = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    format!("{quota} {}", period.unwrap_or(DEFAULT_CPU_PERIOD))
}

/// v2 `memory.swap.max` from OCI `swap` (memory+swap) and `limit`.
/// Returns None when nothing should be written.
pub(crate) fn v2_swap_max(swap: Option<i64>, limit: Option<i64>) -> Result<Option<String>> {
    const FIELD: &str = "linux.resources.memory.swap";
    match (swap, limit) {
        // Unlimited memory and no explicit swap: swap unlimited too (as v1).
        (None, Some(l)) if l < 0 => Ok(Some("max".into())),
        (None, _) => Ok(None),
        (Some(s), _) if s < 0 => Ok(Some("max".into())),
        (Some(_), None) => Err(invalid(
            FIELD,
            swap.unwrap_or_default(),
            "a swap limit needs linux.resources.memory.limit on cgroup v2",
        )),
        (Some(_), Some(l)) if l < 0 => Ok(Some("max".into())),
        (Some(s), Some(l)) if s < l => Err(invalid(
            FIELD,
            s,
            "memory+swap limit must be >= linux.resources.memory.limit",
        )),
        (Some(s), Some(l)) => Ok(Some((s - l).to_string())),
    }
}

/// Check the OCI memory+swap relation shared by v1 and v2.
pub(crate) fn check_swap_vs_limit(swap: Option<i64>, limit: Option<i64>) -> Result<()> {
    if let (Some(s), Some(l)) = (swap, limit) {
        if s >= 0 && l >= 0 && s < l {
            return Err(invalid(
                "linux.resources.memory.swap",
                s,
                "memory+swap limit must be >= linux.resources.memory.limit",
            ));
        }
    }
    Ok(())
}

/// Hugepage size as used in file names ("2MB", "1GB"); refuse anything
/// that could escape the file name.
pub(crate) fn hugepage_size(size: &str) -> Result<&str> {
    if !size.is_empty() && size.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(size)
    } else {
        Err(invalid(
            "linux.resources.hugepageLimits.pageSize",
            size,
            "expected a size like 2MB or 1GB",
        ))
    }
}

/// A v1 device-cgroup rule line: "TYPE MAJ:MIN ACCESS".
pub(crate) fn device_rule(rule: &LinuxDeviceCgroup) -> Result<String> {
    let num = |n: Option<i64>| match n {
        Some(v) if v >= 0 => v.to_string(),
        _ => "*".to_string(),
    };
    let given = rule.access().as_deref().unwrap_or("rwm");
    let given = if given.is_empty() { "rwm" } else { given };
    // Letters other than r, w and m mean nothing to the kernel; runc lets
    // them through its parser unused, and so do we, as long as one
    // meaningful letter is left.
    let access: String = given
        .chars()
        .filter(|c| matches!(c, 'r' | 'w' | 'm'))
        .collect();
    if access.is_empty() {
        return Err(invalid(
            "linux.resources.devices.access",
            given,
            "needs at least one of r, w and m",
        ));
    }
    if access.len() != given.len() {
        tracing::debug!(
            access = given,
            "device access letters other than r, w and m ignored"
        );
    }
    let typ = rule.typ().unwrap_or_default();
    Ok(format!(
        "{} {}:{} {}",
        typ.as_str(),
        num(rule.major()),
        num(rule.minor()),
        access
    ))
}

/// Devices every container may use (mknod of anything, plus the standard
/// character devices), allowed after the spec's rules as runc does.
pub(crate) const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// v2 `io.max` lines, one per device: "MAJ:MIN rbps=.. wbps=.. riops=.. wiops=..".
/// A rate of 0 is written as "max" (no limit), mirroring v1 where 0 removes
/// the rule.
pub(crate) fn io_max_lines(bio: &LinuxBlockIo) -> Vec<String> {
    let mut per_dev: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
    let lists = [
        ("rbps", bio.throttle_read_bps_device()),
        ("wbps", bio.throttle_write_bps_device()),
        ("riops", bio.throttle_read_iops_device()),
        ("wiops", bio.throttle_write_iops_device()),
    ];
    for (key, list) in lists {
        for d in list.iter().flatten() {
            let rate = if d.rate() == 0 {
                "max".to_string()
            } else {
                d.rate().to_string()
            };
            per_dev
                .entry((d.major(), d.minor()))
                .or_default()
                .push(format!("{key}={rate}"));
        }
    }
    per_dev
        .into_iter()
        .map(|((maj, min), kv)| format!("{maj}:{min} {}", kv.join(" ")))
        .collect()
}

/// `rdma.max` line for one device.
pub(crate) fn rdma_line(
    device: &str,
    handles: Option<u32>,
    objects: Option<u32>,
) -> Result<Option<String>> {
    if device.is_empty() || device.contains(char::is_whitespace) {
        return Err(invalid("linux.resources.rdma", device, "bad device name"));
    }
    let mut parts = Vec::new();
    if let Some(h) = handles {
        parts.push(format!("hca_handle={h}"));
    }
    if let Some(o) = objects {
        parts.push(format!("hca_object={o}"));
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!("{device} {}", parts.join(" "))))
}

/// A file name from `linux.resources.unified`: must be a plain name in the
/// cgroup directory.
pub(crate) fn unified_key(key: &str) -> Result<&str> {
    if key.is_empty() || key.contains('/') || key.starts_with('.') || key.contains('\0') {
        Err(invalid(
            "linux.resources.unified",
            key,
            "must be a control file name in the cgroup directory",
        ))
    } else {
        Ok(key)
    }
}
