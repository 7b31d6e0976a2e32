//! Ward census documents: one automerge document per ward, with a document id derived from the
//! ward's name, listing the ward's current charts. The server writes them; devices sync them
//! read-only and learn from them which charts to fetch, over the same connection as the charts.
//!
//! Schema `chartsync/census@2`: `{schema, ward, charts: {<chart id>: true}}`. Chart ids only:
//! an automerge document keeps its history, and a census is synced to every tablet of the
//! ward, so whatever it ever listed stays on them. Version 1 listed each patient's MRN, name,
//! bed and admission time, and so carried everyone who was ever on the ward, including
//! patients who moved to wards the tablet may not see. An id is random and says nothing
//! without the chart, which the tablet fetches (and may read) or is refused. The version is
//! part of the census's id, so a store's version-1 censuses are dropped on upgrade
//! (migration 007) and devices start the new ones afresh, keeping the charts they have.

use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use sha2::{Digest, Sha256};

use crate::chart::{ChartError, ChartId};

pub const CENSUS_SCHEMA: &str = "chartsync/census@2";

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

/// One chart on a ward, as the census lists it: its id, nothing about the patient.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CensusEntry {
    pub id: ChartId,
}

#[derive(Debug, Clone)]
pub struct Census {
    doc: Automerge,
}

impl Census {
    /// A new, empty census of `ward`.
    pub fn new(ward: &str) -> Census {
        let mut doc = Automerge::new();
        crate::seeded::set_actor(&mut doc);
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
        let mut out: Vec<CensusEntry> = self
            .doc
            .map_range(&charts, ..)
            .filter_map(|item| item.key.parse::<ChartId>().ok())
            .map(|id| CensusEntry { id })
            .collect();
        out.sort();
        out
    }

    /// Makes the census list exactly `entries`, writing only what differs. Returns whether
    /// anything changed.
    pub fn set(&mut self, entries: &[CensusEntry]) -> Result<bool, ChartError> {
        let current = self.entries();
        let mut wanted = entries.to_vec();
        wanted.sort();
        wanted.dedup();
        if current == wanted {
            return Ok(false);
        }
        let charts = self.charts_obj().ok_or_else(|| ChartError::Schema {
            path: "charts".into(),
            reason: "the census has no charts map".into(),
        })?;
        self.doc
            .transact::<_, _, AutomergeError>(|tx| {
                for gone in current.iter().filter(|c| !wanted.contains(c)) {
                    tx.delete(&charts, gone.id.to_string())?;
                }
                for entry in wanted.iter().filter(|e| !current.contains(e)) {
                    tx.put(&charts, entry.id.to_string(), true)?;
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

    fn entry(n: u8) -> CensusEntry {
        CensusEntry {
            id: ChartId::from_bytes([n; 16]),
        }
    }

    #[test]
    fn a_wards_census_has_the_same_id_everywhere_and_lists_its_charts() {
        assert_eq!(census_id("4west"), census_id("4west"));
        assert!(is_census_id(&census_id("4west")));
        assert!((0..1000).all(|_| !is_census_id(&ChartId::random())));
        assert_ne!(census_id("4west"), census_id("icu"));
        let mut census = Census::new("4west");
        assert!(census.set(&[entry(1), entry(2)]).unwrap());
        assert!(
            !census.set(&[entry(2), entry(1)]).unwrap(),
            "no change, no write"
        );
        // A transfer out.
        assert!(census.set(&[entry(2)]).unwrap());
        let loaded = Census::load(&census.save()).unwrap();
        assert_eq!(loaded.entries(), vec![entry(2)]);
        assert_eq!(loaded.ward().as_deref(), Some("4west"));
    }

    /// A version-1 census (patients' details in it) is not read as this version's: the
    /// store drops it, and a device starts the new census afresh.
    #[test]
    fn a_version_1_census_is_not_read_as_version_2() {
        let mut doc = Automerge::new();
        doc.transact::<_, _, AutomergeError>(|tx| {
            tx.put(ROOT, "schema", "chartsync/census@1")?;
            tx.put(ROOT, "ward", "4west")?;
            tx.put_object(ROOT, "charts", ObjType::Map)?;
            Ok(())
        })
        .unwrap();
        assert!(Census::load(&doc.save()).is_err());
        assert_ne!(census_id("4west").to_string(), "");
    }

    /// What a census keeps of a ward's past: ids only, a few dozen bytes per admission.
    #[test]
    fn a_busy_wards_census_history_holds_ids_and_nothing_else() {
        let mut census = Census::new("4west");
        let mut listed: Vec<CensusEntry> = Vec::new();
        for n in 0..1000u32 {
            listed.push(CensusEntry {
                id: ChartId::random(),
            });
            if listed.len() > 30 {
                listed.remove((n as usize * 7) % listed.len());
            }
            census.set(&listed).unwrap();
        }
        let saved = census.save();
        assert_eq!(census.entries().len(), 30);
        // 1,000 admissions and 970 departures in the history: about 24 bytes each (24 KB
        // when measured).
        assert!(saved.len() < 40 * 1000, "{} bytes", saved.len());
    }
}
