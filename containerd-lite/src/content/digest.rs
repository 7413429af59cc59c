//! Content digests: `algorithm:hex`, the address of every blob.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

const SHA256_PREFIX: &str = "sha256:";
const SHA256_HEX_LEN: usize = 64;

/// A validated content digest. Only `sha256` is supported: the string form
/// is `sha256:` followed by exactly 64 lowercase hex digits, and
/// [`Display`](fmt::Display) gives back exactly the string that was parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates `sha256:<64 lowercase hex>`; anything else is
    /// `InvalidArgument`.
    pub fn parse(text: &str) -> Result<Digest> {
        let Some((algorithm, encoded)) = text.split_once(':') else {
            return Err(Error::invalid(format!(
                "digest {text:?}: expected algorithm:hex"
            )));
        };
        if algorithm != "sha256" {
            return Err(Error::invalid(format!(
                "digest {text:?}: unsupported algorithm {algorithm:?} (only sha256)"
            )));
        }
        let well_formed = encoded.len() == SHA256_HEX_LEN
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(Error::invalid(format!(
                "digest {text:?}: sha256 needs {SHA256_HEX_LEN} lowercase hex digits"
            )));
        }
        Ok(Digest(text.to_owned()))
    }

    /// The digest of a finished SHA-256 hash.
    pub fn from_sha256(hash: [u8; 32]) -> Digest {
        Digest(format!("{SHA256_PREFIX}{}", hex::encode(hash)))
    }

    /// The SHA-256 digest of `data`, for callers that hold a whole blob.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(data).into())
    }

    /// The algorithm name, `sha256`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The hex-encoded hash, without the algorithm prefix.
    pub fn encoded(&self) -> &str {
        &self.0[SHA256_PREFIX.len()..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(text: &str) -> Result<Digest> {
        Digest::parse(text)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_round_trips_and_matches_the_hash() {
        let digest = Digest::parse(EMPTY).unwrap();
        assert_eq!(digest.to_string(), EMPTY);
        assert_eq!(digest, Digest::sha256_of(b""));
        assert_eq!(digest.algorithm(), "sha256");
        assert_eq!(digest.encoded(), &EMPTY[7..]);
    }

    #[test]
    fn parse_rejects_malformed_digests() {
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        let cases = [
            "",
            "sha256",
            "sha256:",
            "sha512:e3b0",
            &EMPTY[..EMPTY.len() - 1],
            &format!("{EMPTY}0"),
            &upper,
            "sha256:../../../../etc/passwd",
            &EMPTY.replace("sha256:", "SHA256:"),
            &EMPTY.replacen('e', "g", 1),
        ];
        for case in cases {
            let err = Digest::parse(case).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{case:?}");
        }
    }

    #[test]
    fn serde_validates_too() {
        let digest: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(
            serde_json::to_string(&digest).unwrap(),
            format!("\"{EMPTY}\"")
        );
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }
}
