//! A container's mounts from the four places docker takes them: `Binds`
//! (`-v src:dst[:opts]`), `Mounts` (`--mount`), `Tmpfs` (`--tmpfs`) and the
//! anonymous volumes of `Config.Volumes` (the image's `VOLUME`s and `-v
//! /dst`). Checked and resolved at create time, in dockerd's order of
//! precedence: a destination is mounted once, and a later source for the
//! same destination is a conflict.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use bollard_stubs::models::{ContainerConfig, HostConfig, Mount, MountType};

use super::record::{MountKind, MountPoint};
use crate::{Error, Result};

/// The options a bind gets besides `rbind` and ro/rw.
const BIND_PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Every mount `config` and `host` ask for, volumes still unnamed when
/// anonymous (`name: None`) and without a source (the volume store gives
/// both at create).
pub fn requested(config: &ContainerConfig, host: &HostConfig) -> Result<Vec<MountPoint>> {
    let mut by_destination: BTreeMap<String, MountPoint> = BTreeMap::new();
    let mut add = |mount: MountPoint, what: &str| -> Result<()> {
        if by_destination.contains_key(&mount.destination) {
            return Err(Error::invalid(format!(
                "Duplicate mount point: {} ({what})",
                mount.destination
            )));
        }
        by_destination.insert(mount.destination.clone(), mount);
        Ok(())
    };
    for bind in host.binds.iter().flatten() {
        add(parse_bind(bind)?, "in Binds")?;
    }
    for mount in host.mounts.iter().flatten() {
        add(parse_mount(mount)?, "in Mounts")?;
    }
    for (destination, options) in host.tmpfs.iter().flatten() {
        add(tmpfs(destination, options)?, "in Tmpfs")?;
    }
    // The image's and the client's anonymous volumes, unless something
    // else is mounted there already.
    for destination in config.volumes.iter().flatten() {
        let destination = clean_destination(destination)?;
        by_destination
            .entry(destination.clone())
            .or_insert_with(|| MountPoint {
                kind: MountKind::Volume,
                name: None,
                source: PathBuf::new(),
                destination,
                read_write: true,
                options: Vec::new(),
                mode: String::new(),
                propagation: String::new(),
                copy_image_data: true,
            });
    }
    Ok(by_destination.into_values().collect())
}

/// `-v` in its forms: `/host:/dst[:opts]` (a bind), `name:/dst[:opts]`
/// (a named volume), `/dst` (an anonymous volume). Options: `ro`, `rw`,
/// a propagation, `nocopy`, and SELinux's `z`/`Z` (accepted, no effect
/// here).
pub fn parse_bind(text: &str) -> Result<MountPoint> {
    let invalid = || Error::invalid(format!("invalid volume specification: '{text}'"));
    let parts: Vec<&str> = text.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [destination] => ("", *destination, ""),
        [source, destination] => (*source, *destination, ""),
        [source, destination, mode] => (*source, *destination, *mode),
        _ => return Err(invalid()),
    };
    if destination.is_empty() || (parts.len() > 1 && source.is_empty()) {
        return Err(invalid());
    }
    let destination = clean_destination(destination)?;
    let mut read_write = true;
    let mut propagation = String::new();
    let mut copy_image_data = true;
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_write = false,
            "rw" => read_write = true,
            "z" | "Z" => {}
            "nocopy" => copy_image_data = false,
            p if BIND_PROPAGATIONS.contains(&p) => propagation = p.to_owned(),
            _ => {
                return Err(Error::invalid(format!(
                    "invalid mode: {option} (in volume specification '{text}')"
                )))
            }
        }
    }
    let kind = if source.is_empty() || !source.starts_with('/') {
        MountKind::Volume
    } else {
        MountKind::Bind
    };
    if kind == MountKind::Volume && !propagation.is_empty() {
        return Err(Error::invalid(format!(
            "invalid volume specification: '{text}': propagation applies to binds only"
        )));
    }
    if kind == MountKind::Bind && !copy_image_data {
        return Err(Error::invalid(format!(
            "invalid volume specification: '{text}': nocopy applies to volumes only"
        )));
    }
    Ok(MountPoint {
        kind,
        name: (kind == MountKind::Volume && !source.is_empty()).then(|| source.to_owned()),
        source: if kind == MountKind::Bind {
            PathBuf::from(source)
        } else {
            PathBuf::new()
        },
        destination,
        read_write,
        options: Vec::new(),
        mode: mode.to_owned(),
        propagation: if kind == MountKind::Bind && propagation.is_empty() {
            "rprivate".to_owned()
        } else {
            propagation
        },
        copy_image_data: kind == MountKind::Volume && copy_image_data,
    })
}

/// One `--mount` (`HostConfig.Mounts`): bind, volume or tmpfs.
pub fn parse_mount(mount: &Mount) -> Result<MountPoint> {
    let target = mount
        .target
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::invalid("invalid mount config: Target must not be empty"))?;
    let destination = clean_destination(target)?;
    let read_write = !mount.read_only.unwrap_or(false);
    let source = mount.source.as_deref().unwrap_or("");
    match mount.typ {
        Some(MountType::BIND) => {
            if !source.starts_with('/') {
                return Err(Error::invalid(format!(
                    "invalid mount config for type \"bind\": invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            if !Path::new(source).exists() {
                return Err(Error::invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {source}"
                )));
            }
            let propagation = mount
                .bind_options
                .as_ref()
                .and_then(|o| o.propagation)
                .map(|p| p.to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "rprivate".to_owned());
            Ok(MountPoint {
                kind: MountKind::Bind,
                name: None,
                source: PathBuf::from(source),
                destination,
                read_write,
                options: Vec::new(),
                mode: String::new(),
                propagation,
                copy_image_data: false,
            })
        }
        Some(MountType::VOLUME) => {
            let no_copy = mount
                .volume_options
                .as_ref()
                .and_then(|o| o.no_copy)
                .unwrap_or(false);
            Ok(MountPoint {
                kind: MountKind::Volume,
                name: (!source.is_empty()).then(|| source.to_owned()),
                source: PathBuf::new(),
                destination,
                read_write,
                options: Vec::new(),
                mode: String::new(),
                propagation: String::new(),
                copy_image_data: !no_copy,
            })
        }
        Some(MountType::TMPFS) => {
            if !source.is_empty() {
                return Err(Error::invalid(
                    "invalid mount config for type \"tmpfs\": Source must not be specified",
                ));
            }
            let mut options = Vec::new();
            if let Some(tmpfs) = &mount.tmpfs_options {
                if let Some(size) = tmpfs.size_bytes.filter(|s| *s > 0) {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = tmpfs.mode.filter(|m| *m > 0) {
                    options.push(format!("mode={mode:o}"));
                }
            }
            let mut point = tmpfs(&destination, &options.join(","))?;
            point.read_write = read_write;
            Ok(point)
        }
        Some(other) => Err(Error::invalid(format!(
            "invalid mount config: mount type {other} is not supported"
        ))),
        None => Err(Error::invalid(
            "invalid mount config: Type must be one of bind, volume, tmpfs",
        )),
    }
}

/// A tmpfs at `destination` with `--tmpfs`'s options (`size=64m,mode=1777`,
/// `ro`, `noexec`...). docker's defaults: `noexec,nosuid,nodev`.
pub fn tmpfs(destination: &str, options: &str) -> Result<MountPoint> {
    let destination = clean_destination(destination)?;
    let mut read_write = true;
    let mut flags: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_write = false,
            "rw" => read_write = true,
            "exec" => flags.retain(|f| f != "noexec"),
            "suid" => flags.retain(|f| f != "nosuid"),
            "dev" => flags.retain(|f| f != "nodev"),
            "noexec" | "nosuid" | "nodev" => {}
            other
                if other.starts_with("size=")
                    || other.starts_with("mode=")
                    || other.starts_with("uid=")
                    || other.starts_with("gid=")
                    || other.starts_with("nr_inodes=")
                    || other == "noatime"
                    || other == "relatime"
                    || other == "nosymfollow" =>
            {
                flags.push(other.to_owned())
            }
            other => {
                return Err(Error::invalid(format!(
                    "invalid tmpfs option {other:?} for {destination}"
                )))
            }
        }
    }
    Ok(MountPoint {
        kind: MountKind::Tmpfs,
        name: None,
        source: PathBuf::new(),
        destination,
        read_write,
        options: flags,
        mode: options.to_owned(),
        propagation: String::new(),
        copy_image_data: false,
    })
}

/// An absolute, clean container path (no `..`), `/` refused.
fn clean_destination(text: &str) -> Result<String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(Error::invalid(format!(
            "invalid mount config: mount path must be absolute: {text}"
        )));
    }
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    if clean == Path::new("/") {
        return Err(Error::invalid(format!(
            "invalid specification: destination can't be '/' in '{text}'"
        )));
    }
    Ok(clean.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_forms_parse_as_docker_reads_them() {
        let bind = parse_bind("/srv/data:/data:ro").unwrap();
        assert_eq!(bind.kind, MountKind::Bind);
        assert_eq!(bind.source, PathBuf::from("/srv/data"));
        assert_eq!(bind.destination, "/data");
        assert!(!bind.read_write);
        assert_eq!(bind.propagation, "rprivate");

        let named = parse_bind("cache:/var/cache:nocopy").unwrap();
        assert_eq!(named.kind, MountKind::Volume);
        assert_eq!(named.name.as_deref(), Some("cache"));
        assert!(!named.copy_image_data);

        let anonymous = parse_bind("/scratch/").unwrap();
        assert_eq!(anonymous.kind, MountKind::Volume);
        assert_eq!(anonymous.name, None);
        assert_eq!(anonymous.destination, "/scratch");

        for bad in [
            "",
            "a:b:c:d",
            "/x:relative",
            "/x:/",
            "/x:/y:bogus",
            ":/y",
            "v:/y:rshared",
        ] {
            assert_eq!(
                parse_bind(bad).unwrap_err().kind,
                crate::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_destination_is_mounted_once() {
        let host = HostConfig {
            binds: Some(vec!["/a:/data".into(), "/b:/data/".into()]),
            ..Default::default()
        };
        let err = requested(&ContainerConfig::default(), &host).unwrap_err();
        assert!(
            err.message.contains("Duplicate mount point: /data"),
            "{err}"
        );

        // An image VOLUME covered by a bind is not made anonymous.
        let host = HostConfig {
            binds: Some(vec!["/a:/data".into()]),
            tmpfs: Some([("/run".to_owned(), "size=1m".to_owned())].into()),
            ..Default::default()
        };
        let config = ContainerConfig {
            volumes: Some(vec!["/data".into(), "/logs".into()]),
            ..Default::default()
        };
        let mounts = requested(&config, &host).unwrap();
        let kinds: Vec<_> = mounts
            .iter()
            .map(|m| (m.destination.as_str(), m.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("/data", MountKind::Bind),
                ("/logs", MountKind::Volume),
                ("/run", MountKind::Tmpfs)
            ]
        );
        let run = &mounts[2];
        assert!(run.options.contains(&"size=1m".to_owned()));
        assert!(run.options.contains(&"noexec".to_owned()));
    }

    #[test]
    fn tmpfs_options_are_checked() {
        let tmp = tmpfs("/t", "exec,size=10m,ro").unwrap();
        assert!(!tmp.read_write);
        assert!(!tmp.options.contains(&"noexec".to_owned()));
        assert!(tmpfs("/t", "bogus").is_err());
        assert!(tmpfs("t", "").is_err());
    }
}
