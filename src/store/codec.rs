//! How a record is written as bytes, once for every backend: the Session's or Agent's JSON,
//! with the kind kept in the key.

use super::StoreError;
use crate::core::model::{OwnerKind, Record};

/// The record's JSON (without its kind: the key names it).
pub(super) fn to_json(record: &Record) -> Result<Vec<u8>, StoreError> {
    match record {
        Record::Session(s) => serde_json::to_vec(s),
        Record::Agent(a) => serde_json::to_vec(a),
    }
    .map_err(|e| StoreError::Invalid(format!("cannot encode record: {e}")))
}

/// Decodes a record of `kind` named `name` (both from its key), stored as `json`; `shown`
/// names the key in errors. A record that does not decode, or that holds another name than
/// its key, is corruption: never skipped.
pub(super) fn from_json(
    kind: OwnerKind,
    name: &str,
    shown: &str,
    json: &[u8],
) -> Result<Record, StoreError> {
    let undecodable = |e: serde_json::Error| {
        StoreError::Corrupt(format!("record {shown} cannot be decoded: {e}"))
    };
    let record = match kind {
        OwnerKind::Session => Record::Session(serde_json::from_slice(json).map_err(undecodable)?),
        OwnerKind::Agent => Record::Agent(serde_json::from_slice(json).map_err(undecodable)?),
    };
    let owner = record.owner();
    if owner.name.as_str() != name {
        return Err(StoreError::Corrupt(format!("record {shown} holds {owner}")));
    }
    Ok(record)
}
