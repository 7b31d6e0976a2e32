//! A chart's document id: 16 random bytes, written as automerge-repo writes document ids
//! (base58check), so that a chart's URL is `automerge:<id>` to any automerge-repo peer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::ChartError;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChartId([u8; 16]);

/// In an OpenAPI document: the id as text (the automerge-repo document id, base58check).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ChartId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("a chart's id: its automerge-repo document id"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ChartId {}

impl ChartId {
    /// A new random id (the bytes of a UUID v4, as automerge-repo makes them).
    pub fn random() -> ChartId {
        loop {
            let id = ChartId(*crate::seeded::uuid_v4().as_bytes());
            // Census ids are marked; a random id that looks like one (2^-32) is drawn again.
            if !crate::census::is_census_id(&id) {
                return id;
            }
        }
    }

    pub fn from_bytes(bytes: [u8; 16]) -> ChartId {
        ChartId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The automerge URL of the chart's document.
    pub fn url(&self) -> String {
        format!("automerge:{self}")
    }
}

impl fmt::Display for ChartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for ChartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChartId({self})")
    }
}

// The bindings carry a chart id as its string form.
#[cfg(feature = "uniffi")]
uniffi::custom_type!(ChartId, String, {
    lower: |id| id.to_string(),
    try_lift: |text| Ok(text.parse::<ChartId>()?),
});

impl FromStr for ChartId {
    type Err = ChartError;

    /// Accepts the bare id or its `automerge:` URL.
    fn from_str(s: &str) -> Result<ChartId, ChartError> {
        let bare = s.strip_prefix("automerge:").unwrap_or(s);
        let invalid = |reason: &str| ChartError::InvalidValue {
            field: "chart id",
            reason: reason.to_string(),
        };
        let bytes = bs58::decode(bare)
            .with_check(None)
            .into_vec()
            .map_err(|_| invalid("not a base58check document id"))?;
        let bytes: [u8; 16] = bytes
            .try_into()
            .map_err(|_| invalid("a chart id holds 16 bytes"))?;
        Ok(ChartId(bytes))
    }
}

impl Serialize for ChartId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChartId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ChartId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_urls() {
        let id = ChartId::random();
        assert_eq!(id.to_string().parse::<ChartId>().unwrap(), id);
        assert_eq!(id.url().parse::<ChartId>().unwrap(), id);
    }

    #[test]
    fn a_mistyped_id_is_caught_by_its_checksum() {
        let id = ChartId::random().to_string();
        let mut chars: Vec<char> = id.chars().collect();
        chars[3] = if chars[3] == '2' { '3' } else { '2' };
        let typo: String = chars.into_iter().collect();
        assert!(typo.parse::<ChartId>().is_err());
        assert!("".parse::<ChartId>().is_err());
        assert!("automerge:0OIl".parse::<ChartId>().is_err());
    }

    #[test]
    fn reads_an_id_automerge_repo_made() {
        // The document id in automerge-repo's announcement (automerge.org blog, 2023-11-06).
        let url = "automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ";
        let id: ChartId = url.parse().unwrap();
        assert_eq!(id.url(), url);
    }
}
