//! Mounts given on a command line, in ctr's syntax:
//! `type=bind,src=/a,dst=/b,options=rbind:ro`.

use oci_spec::runtime::{Mount, MountBuilder};

use crate::{Error, Result};

/// Parses one `--mount` value. Keys: `type`, `source`/`src`,
/// `destination`/`dst`/`target`, `options` (`:`-separated). A destination
/// is required and must be absolute; a bind mount also needs an absolute
/// source. The type defaults to `none`, as ctr's does.
pub fn parse_mount(text: &str) -> Result<Mount> {
    let invalid = |why: String| Error::invalid(format!("mount {text:?}: {why}"));
    let (mut typ, mut source, mut destination, mut options) = (None, None, None, Vec::new());
    for field in text.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| invalid(format!("{field:?} is not key=value")))?;
        match key {
            "type" => typ = Some(value.to_owned()),
            "source" | "src" => source = Some(value.to_owned()),
            "destination" | "dst" | "target" => destination = Some(value.to_owned()),
            "options" => options = value.split(':').map(str::to_owned).collect(),
            other => {
                return Err(invalid(format!(
                    "unknown key {other:?} (type, src, dst, options)"
                )))
            }
        }
    }
    let destination = destination.ok_or_else(|| invalid("no destination (dst=...)".into()))?;
    if !destination.starts_with('/') {
        return Err(invalid(format!(
            "destination {destination:?} is not absolute"
        )));
    }
    let typ = typ.unwrap_or_else(|| "none".to_owned());
    if typ == "bind" && !source.as_deref().is_some_and(|s| s.starts_with('/')) {
        return Err(invalid(
            "a bind mount needs an absolute source (src=/...)".into(),
        ));
    }
    if options.iter().any(String::is_empty) {
        return Err(invalid("empty mount option".into()));
    }
    let mut builder = MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .options(options);
    if let Some(source) = source {
        builder = builder.source(source);
    }
    builder.build().map_err(|e| invalid(e.to_string()))
}

/// A read-only bind of a host file (as `/etc/hosts` with host networking).
pub fn readonly_bind(host: &str, container: &str) -> Result<Mount> {
    MountBuilder::default()
        .destination(container)
        .typ("bind")
        .source(host)
        .options(vec!["rbind".to_owned(), "ro".to_owned()])
        .build()
        .map_err(|e| Error::internal(format!("bind of {host}: {e}")))
}
