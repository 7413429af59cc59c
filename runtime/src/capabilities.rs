//! Capabilities of the container process (all five sets), with `caps`.
//!
//! Order matters: the bounding set is narrowed while we still hold
//! CAP_SETPCAP (before changing uid); the other sets are set after the uid
//! change (with keep-caps on), ambient last.

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Context, Error, Result};

/// Remove, with a warning, the names that are no capability of the runtime
/// spec's list from the sets of a `capabilities` JSON object (of a config
/// or a process.json). runc and crun ignore them the same way, so a config
/// written for a newer kernel still runs; a name this kernel lacks is
/// skipped later, by [`convert`].
pub fn drop_unknown_names(capabilities: &mut serde_json::Value) {
    let Some(sets) = capabilities.as_object_mut() else {
        return;
    };
    let mut unknown = Vec::new();
    for list in sets
        .values_mut()
        .filter_map(serde_json::Value::as_array_mut)
    {
        list.retain(|name| match name.as_str() {
            Some(name) if !is_known(name) => {
                unknown.push(name.to_string());
                false
            }
            _ => true,
        });
    }
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        tracing::warn!("ignoring unknown capabilities: {}", unknown.join(", "));
    }
}

/// Whether `name` (`CAP_KILL`) is a capability of the runtime spec's list.
pub fn is_known(name: &str) -> bool {
    serde_json::from_value::<oci_spec::runtime::Capability>(serde_json::Value::String(
        name.to_string(),
    ))
    .is_ok()
}

/// Convert an OCI capability set into the `caps` crate's. Names this
/// kernel/library does not know are skipped, as runc skips them.
fn convert(set: Option<&Capabilities>) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for cap in set.into_iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| Error::internal(format!("capability {cap:?}: cannot name it")))?;
        match name.parse::<Capability>() {
            Ok(c) if caps::all().contains(&c) => {
                out.insert(c);
            }
            _ => tracing::debug!(capability = %name, "unknown to this kernel; skipped"),
        }
    }
    Ok(out)
}

/// Drop everything outside `caps.bounding` from the bounding set.
pub fn narrow_bounding(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let keep = convert(caps.and_then(|c| c.bounding().as_ref()))?;
    let running = caps::runtime::thread_all_supported();
    for cap in running.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap)
            .with_context(|| format!("dropping {cap} from the bounding set"))?;
    }
    Ok(())
}

/// Set the effective, permitted, inheritable and ambient sets.
pub fn apply_sets(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let get = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| {
        convert(caps.and_then(|c| f(c).as_ref()))
    };
    let effective = get(LinuxCapabilities::effective)?;
    let permitted = get(LinuxCapabilities::permitted)?;
    let inheritable = get(LinuxCapabilities::inheritable)?;
    let ambient = get(LinuxCapabilities::ambient)?;
    // Inheritable while the permitted set is still whole; effective before
    // permitted shrinks, since effective must stay a subset of permitted.
    caps::set(None, CapSet::Inheritable, &inheritable)
        .context("setting inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &effective).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &permitted).context("setting permitted capabilities")?;
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    for cap in &ambient {
        // Ambient needs the capability in permitted and inheritable.
        if permitted.contains(cap) && inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap)
                .with_context(|| format!("raising ambient {cap}"))?;
        }
    }
    Ok(())
}
