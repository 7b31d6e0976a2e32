//! Ward census documents: one automerge document per ward, with a document id derived from the
//! ward's name, listing the ward's current charts. The server writes them; devices sync them
//! read-only and learn from them which charts to fetch, over the same connection as the charts.
//!
//! Schema `chartsync/census@1`: `{schema, ward, charts: {<chart id>: {mrn, family_name,
//! given_names, bed, admitted_at}}}`.

use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use sha2::{Digest, Sha256};

use crate::chart::{ChartError, ChartId};

pub const CENSUS_SCHEMA: &str = "chartsync/census@1";

/// The first bytes of every census id, which no chart id has ([`ChartId::random`] avoids
/// them), so that a device cannot take a census's id for a chart.
const CENSUS_MARK: [u8; 4] = *b"cnss";

/// The census document of a ward: the same id on every server and device.
pub fn census_id(ward: &str) -> ChartId {
    let digest = Sha256::digest(format!("{CENSUS_SCHEMA}:{ward}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&CENSUS_MARK);
    bytes[4..].copy_from_slice(&digest[..12]);
    ChartId::from_bytes(bytes)
}

/// Whether an id is of the kind census documents have.
pub fn is_census_id(id: &ChartId) -> bool {
    id.as_bytes()[..4] == CENSUS_MARK
}

/// One chart on a ward, as the census lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct CensusEntry {
    pub id: ChartId,
    pub mrn: String,
    pub family_name: String,
    pub given_names: String,
    pub bed: Option<String>,
    pub admitted_at: String,
}

#[derive(Debug, Clone)]
pub struct Census {
    doc: Automerge,
}

impl Census {
    /// A new, empty census of `ward`.
    pub fn new(ward: &str) -> Census {
        let mut doc = Automerge::new();
        // Writing fresh keys to a new document cannot fail.
        let _ = doc.transact::<_, _, AutomergeError>(|tx| {
            tx.put(ROOT, "schema", CENSUS_SCHEMA)?;
            tx.put(ROOT, "ward", ward)?;
            tx.put_object(ROOT, "charts", ObjType::Map)?;
            Ok(())
        });
        Census { doc }
    }

    pub fn load(bytes: &[u8]) -> Result<Census, ChartError> {
        let doc = crate::chart::load_document(bytes)?;
        Census::from_automerge(doc)
    }

    pub fn from_automerge(doc: Automerge) -> Result<Census, ChartError> {
        match doc.get(ROOT, "schema")? {
            Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Str(v) if v.as_str() == CENSUS_SCHEMA) => {
                Ok(Census { doc })
            }
            _ => Err(ChartError::NotAChart("not a ward census".into())),
        }
    }

    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    pub(crate) fn doc_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    pub fn ward(&self) -> Option<String> {
        self.read_str(&ROOT, "ward")
    }

    fn read_str(&self, obj: &automerge::ObjId, key: &str) -> Option<String> {
        match self.doc.get(obj, key).ok()?? {
            (Value::Scalar(s), _) => match s.as_ref() {
                ScalarValue::Str(v) => Some(v.to_string()),
                _ => None,
            },
            _ => None,
        }
    }

    fn charts_obj(&self) -> Option<automerge::ObjId> {
        match self.doc.get(ROOT, "charts").ok()?? {
            (Value::Object(ObjType::Map), id) => Some(id),
            _ => None,
        }
    }

    /// The charts listed, by id.
    pub fn entries(&self) -> Vec<CensusEntry> {
        let Some(charts) = self.charts_obj() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in self.doc.map_range(&charts, ..) {
            let obj = item.id();
            let (Ok(id), Value::Object(ObjType::Map)) =
                (item.key.parse::<ChartId>(), item.value.into_value())
            else {
                continue;
            };
            out.push(CensusEntry {
                id,
                mrn: self.read_str(&obj, "mrn").unwrap_or_default(),
                family_name: self.read_str(&obj, "family_name").unwrap_or_default(),
                given_names: self.read_str(&obj, "given_names").unwrap_or_default(),
                bed: self.read_str(&obj, "bed"),
                admitted_at: self.read_str(&obj, "admitted_at").unwrap_or_default(),
            });
        }
        out.sort();
        out
    }

    /// Makes the census list exactly `entries`, writing only what differs. Returns whether
    /// anything changed.
    pub fn set(&mut self, entries: &[CensusEntry]) -> Result<bool, ChartError> {
        let current = self.entries();
        let mut wanted = entries.to_vec();
        wanted.sort();
        if current == wanted {
            return Ok(false);
        }
        let charts = self.charts_obj().ok_or_else(|| ChartError::Schema {
            path: "charts".into(),
            reason: "the census has no charts map".into(),
        })?;
        self.doc
            .transact::<_, _, AutomergeError>(|tx| {
                for gone in current
                    .iter()
                    .filter(|c| !wanted.iter().any(|w| w.id == c.id))
                {
                    tx.delete(&charts, gone.id.to_string())?;
                }
                for entry in wanted.iter().filter(|e| !current.contains(e)) {
                    let obj = tx.put_object(&charts, entry.id.to_string(), ObjType::Map)?;
                    tx.put(&obj, "mrn", entry.mrn.as_str())?;
                    tx.put(&obj, "family_name", entry.family_name.as_str())?;
                    tx.put(&obj, "given_names", entry.given_names.as_str())?;
                    if let Some(bed) = &entry.bed {
                        tx.put(&obj, "bed", bed.as_str())?;
                    }
                    tx.put(&obj, "admitted_at", entry.admitted_at.as_str())?;
                }
                Ok(())
            })
            .map_err(|f| ChartError::from(f.error))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, bed: &str) -> CensusEntry {
        CensusEntry {
            id: ChartId::from_bytes([n; 16]),
            mrn: format!("MRN-{n}"),
            family_name: "Rivera".into(),
            given_names: "Ana".into(),
            bed: Some(bed.into()),
            admitted_at: "2026-11-27T20:00:00Z".into(),
        }
    }

    #[test]
    fn a_wards_census_has_the_same_id_everywhere_and_lists_its_charts() {
        assert_eq!(census_id("4west"), census_id("4west"));
        assert!(is_census_id(&census_id("4west")));
        assert!((0..1000).all(|_| !is_census_id(&ChartId::random())));
        assert_ne!(census_id("4west"), census_id("icu"));
        let mut census = Census::new("4west");
        assert!(census.set(&[entry(1, "12A"), entry(2, "12B")]).unwrap());
        assert!(
            !census.set(&[entry(2, "12B"), entry(1, "12A")]).unwrap(),
            "no change, no write"
        );
        // A transfer out and a bed move.
        assert!(census.set(&[entry(2, "3")]).unwrap());
        let loaded = Census::load(&census.save()).unwrap();
        assert_eq!(loaded.entries(), vec![entry(2, "3")]);
        assert_eq!(loaded.ward().as_deref(), Some("4west"));
    }
}
