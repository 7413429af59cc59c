//! Platforms (`os/architecture[/variant]`) and the choice of a manifest
//! from a multi-platform index.

use std::fmt;

use oci_client::manifest::ImageIndexEntry;
use oci_spec::image::{Arch, Os};

use crate::{Error, Result};

/// The platform an image is pulled for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform berthd runs on, in OCI's names (`linux/amd64`).
    pub fn host() -> Platform {
        Platform {
            os: Os::default().to_string(),
            architecture: Arch::default().to_string(),
            variant: None,
        }
    }

    /// Parses `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, architecture] | [os, architecture, _]
                if !os.is_empty() && !architecture.is_empty() =>
            {
                Ok(Platform {
                    os: Os::from(*os).to_string(),
                    architecture: Arch::from(*architecture).to_string(),
                    variant: parts
                        .get(2)
                        .map(|v| (*v).to_owned())
                        .filter(|v| !v.is_empty()),
                })
            }
            _ => Err(Error::invalid(format!(
                "platform {text:?}: expected os/architecture[/variant]"
            ))),
        }
    }

    /// Whether an index entry is for this platform. An entry without a
    /// variant matches any wanted variant of its architecture, and arm64's
    /// default variant `v8` matches an entry that names none.
    fn matches(&self, entry: &ImageIndexEntry) -> bool {
        let Some(platform) = &entry.platform else {
            return false;
        };
        if platform.os.to_string() != self.os
            || platform.architecture.to_string() != self.architecture
        {
            return false;
        }
        match (&self.variant, &platform.variant) {
            (Some(wanted), Some(offered)) => wanted == offered,
            (Some(wanted), None) => self.architecture != "arm64" || wanted == "v8",
            (None, _) => true,
        }
    }

    /// The entry of `manifests` to pull for this platform, with its
    /// position: the first that matches. `NotFound` (listing what the
    /// index offers) when none does.
    pub fn select<'a>(
        &self,
        manifests: &'a [ImageIndexEntry],
    ) -> Result<(usize, &'a ImageIndexEntry)> {
        manifests
            .iter()
            .enumerate()
            .find(|(_, entry)| self.matches(entry))
            .ok_or_else(|| {
                let offered: Vec<String> = manifests
                    .iter()
                    .filter_map(|entry| entry.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(variant) => format!("{}/{}/{variant}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                Error::not_found(format!(
                    "no manifest for platform {self} (the index offers: {})",
                    offered.join(", ")
                ))
            })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn entry(platform: &str, digest: &str) -> ImageIndexEntry {
        let wanted = Platform::parse(platform).unwrap();
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 1,
            "platform": {
                "os": wanted.os,
                "architecture": wanted.architecture,
                "variant": wanted.variant,
            },
        }))
        .unwrap()
    }

    #[test]
    fn parse_normalises_and_round_trips() {
        let platform = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(platform.to_string(), "linux/arm64/v8");
        assert_eq!(Platform::parse("linux/amd64").unwrap().variant, None);
        for bad in ["linux", "/amd64", "linux/", "a/b/c/d"] {
            assert_eq!(
                Platform::parse(bad).unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn select_picks_the_matching_manifest() {
        let index = [
            entry("linux/arm/v7", "a"),
            entry("linux/arm64/v8", "b"),
            entry("linux/amd64", "c"),
        ];
        let pick = |platform: &str| {
            Platform::parse(platform)
                .unwrap()
                .select(&index)
                .map(|(position, e)| (position, e.digest.clone()))
        };
        assert_eq!(pick("linux/amd64").unwrap(), (2, "c".to_owned()));
        assert_eq!(pick("linux/arm64").unwrap(), (1, "b".to_owned()));
        assert_eq!(pick("linux/arm/v7").unwrap(), (0, "a".to_owned()));
        let err = pick("linux/s390x").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("linux/arm64/v8"), "{}", err.message);
    }
}
