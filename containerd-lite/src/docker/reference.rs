//! Docker's image references: `busybox` means
//! `docker.io/library/busybox:latest`, the form image records are stored
//! under (as dockerd's containerd image store keeps them), and is shown
//! back in its short "familiar" form. Images without a name are kept as
//! `moby-dangling@<digest>`, dockerd's name for them.

use oci_client::Reference;

use crate::{Error, Result};

/// The name prefix of records that keep an untagged image alive.
pub const DANGLING_PREFIX: &str = "moby-dangling@";

/// The name prefix of the build cache's records (see
/// [`crate::docker::build`]): they keep the images of build steps.
pub const BUILD_CACHE_PREFIX: &str = "moby-build-cache@";

const DOCKER_HUB: &str = "docker.io";
const OFFICIAL: &str = "library/";

/// A parsed, normalized image reference.
#[derive(Debug, Clone)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses `text`, adding docker's defaults (registry `docker.io`,
    /// `library/` for official images, tag `latest` when there is neither
    /// a tag nor a digest). `InvalidArgument` for what docker refuses.
    pub fn parse(text: &str) -> Result<ImageRef> {
        let invalid = |why: &str| Error::invalid(format!("invalid reference format: {why}"));
        if text.is_empty() {
            return Err(invalid("empty reference"));
        }
        let repository = text.split(['@']).next().unwrap_or(text);
        let path = repository
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or(repository, |(path, _)| path);
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            // The registry part may have capitals; the repository may not.
            let remote = path.split_once('/').map_or(path, |(first, rest)| {
                if first.contains(['.', ':']) || first == "localhost" {
                    rest
                } else {
                    path
                }
            });
            if remote.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(invalid("repository name must be lowercase"));
            }
        }
        let inner: Reference = text
            .parse()
            .map_err(|err| Error::invalid(format!("invalid reference format: {text:?}: {err}")))?;
        Ok(ImageRef { inner })
    }

    /// `repository` with `tag` (empty: `latest`), as `docker tag` and
    /// `docker pull` send them.
    pub fn with_tag(repository: &str, tag: &str) -> Result<ImageRef> {
        if tag.is_empty() {
            return ImageRef::parse(repository);
        }
        if tag.starts_with("sha256:") {
            return ImageRef::parse(&format!("{repository}@{tag}"));
        }
        validate_tag(tag)?;
        let parsed = ImageRef::parse(repository)?;
        if parsed.inner.digest().is_some() {
            return Err(Error::invalid(format!(
                "invalid reference format: {repository:?} has a digest and a tag was given"
            )));
        }
        ImageRef::parse(&format!("{}:{tag}", parsed.repository()))
    }

    /// The full name records are stored under:
    /// `docker.io/library/busybox:latest`.
    pub fn name(&self) -> String {
        self.inner.whole()
    }

    /// The full repository: `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.inner.registry(), self.inner.repository())
    }

    /// The tag (`latest` when the text had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest of a `name@sha256:...` reference.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The registry host (and port): `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The path in the registry: `library/busybox`.
    pub fn path(&self) -> &str {
        self.inner.repository()
    }

    /// The short form docker shows: `busybox:latest`,
    /// `localhost:5000/x:1`.
    pub fn familiar(&self) -> String {
        familiar(&self.name())
    }

    /// The short repository: `busybox`.
    pub fn familiar_repository(&self) -> String {
        familiar(&self.repository())
    }
}

/// A tag as docker allows them: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid tag format: {tag:?}")))
    }
}

/// The familiar form of a full name: `docker.io/library/` and
/// `docker.io/` dropped.
pub fn familiar(name: &str) -> String {
    let Some(rest) = name
        .strip_prefix(DOCKER_HUB)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return name.to_owned();
    };
    rest.strip_prefix(OFFICIAL).unwrap_or(rest).to_owned()
}

/// Whether a record name is a dangling image's.
pub fn is_dangling(name: &str) -> bool {
    name.starts_with(DANGLING_PREFIX)
}

/// Whether `name` is a build cache record.
pub fn is_build_cache(name: &str) -> bool {
    name.starts_with(BUILD_CACHE_PREFIX)
}

/// Whether `name` is not an image name a user gave (a dangling or a build
/// cache record).
pub fn is_unnamed(name: &str) -> bool {
    is_dangling(name) || is_build_cache(name)
}

/// The record name that keeps an untagged image with `target` alive.
pub fn dangling_name(target: &str) -> String {
    format!("{DANGLING_PREFIX}{target}")
}

/// What a string given as an image names, as dockerd tries it: a full
/// image ID, else a reference, else (for hex) an ID prefix.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// `sha256:<64 hex>` or 64 hex digits: the config digest.
    Id(String),
    /// A reference, and the ID prefix it could also be (hex text).
    Reference(ImageRef, Option<String>),
    /// Only an ID prefix (`sha256:abc`, or hex that is no valid name).
    IdPrefix(String),
}

impl Lookup {
    /// Classifies `text`; `InvalidArgument` when it is neither an ID nor a
    /// valid reference.
    pub fn parse(text: &str) -> Result<Lookup> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        let is_hex = !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
        if is_hex && hex.len() == 64 {
            return Ok(Lookup::Id(format!("sha256:{}", hex.to_ascii_lowercase())));
        }
        if is_hex && text.starts_with("sha256:") {
            return Ok(Lookup::IdPrefix(format!("sha256:{hex}")));
        }
        let prefix = is_hex.then(|| format!("sha256:{hex}"));
        match ImageRef::parse(text) {
            Ok(reference) => Ok(Lookup::Reference(reference, prefix)),
            Err(_) if prefix.is_some() => Ok(Lookup::IdPrefix(prefix.unwrap_or_default())),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_as_docker_does() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            ("user/app:1", "docker.io/user/app:1", "user/app:1"),
            (
                "localhost:5000/x",
                "localhost:5000/x:latest",
                "localhost:5000/x:latest",
            ),
            (
                "127.0.0.1:5000/a/b:t",
                "127.0.0.1:5000/a/b:t",
                "127.0.0.1:5000/a/b:t",
            ),
        ];
        for (text, name, familiar_form) in cases {
            let parsed = ImageRef::parse(text).unwrap();
            assert_eq!(parsed.name(), name, "{text}");
            assert_eq!(parsed.familiar(), familiar_form, "{text}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        let parsed = ImageRef::parse(&format!("busybox@{digest}")).unwrap();
        assert_eq!(parsed.name(), format!("docker.io/library/busybox@{digest}"));
        assert_eq!(parsed.tag(), None);
        assert_eq!(parsed.familiar_repository(), "busybox");
    }

    #[test]
    fn bad_references_and_tags_are_refused() {
        for bad in ["", "Busybox", "a b", "x:"] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(ImageRef::parse("MyRegistry.io/x").is_ok());
        assert!(ImageRef::with_tag("busybox", "-bad").is_err());
        assert_eq!(
            ImageRef::with_tag("localhost:5000/x", "v1").unwrap().name(),
            "localhost:5000/x:v1"
        );
    }

    #[test]
    fn ids_prefixes_and_names_are_told_apart() {
        let full = "b".repeat(64);
        assert!(
            matches!(Lookup::parse(&full).unwrap(), Lookup::Id(id) if id == format!("sha256:{full}"))
        );
        assert!(
            matches!(Lookup::parse("sha256:bb").unwrap(), Lookup::IdPrefix(p) if p == "sha256:bb")
        );
        assert!(matches!(
            Lookup::parse("abc1").unwrap(),
            Lookup::Reference(_, Some(_))
        ));
        assert!(matches!(
            Lookup::parse("busybox").unwrap(),
            Lookup::Reference(_, None)
        ));
    }
}
