//! How records are stored: JSON documents, so fields can be added freely.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Encodes a record for a table value.
pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|err| Error::internal(format!("encode record: {err}")))
}

/// Decodes a table value; `what` names the record in the error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl std::fmt::Display) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|err| Error::internal(format!("{what}: corrupt record: {err}")))
}
