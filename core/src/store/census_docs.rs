//! Ward census documents as the store keeps them (see `crate::census`).

use super::sql::{params, OptionalExtension};

use super::{ChartStore, StoreError};

impl ChartStore {
    /// A ward's census document, if this store keeps one.
    pub fn census_doc(&self, ward: &str) -> Result<Option<crate::census::Census>, StoreError> {
        let bytes: Option<Vec<u8>> = self.inner.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT data FROM census_docs WHERE ward = ?1",
                    [ward],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        bytes
            .map(|b| {
                crate::census::Census::load(&b).map_err(|_| {
                    StoreError::Corrupt(format!("the census of ward {ward} does not load"))
                })
            })
            .transpose()
    }

    /// Keeps a ward's census document (replacing the one kept before).
    pub fn save_census_doc(&self, census: &crate::census::Census) -> Result<(), StoreError> {
        let Some(ward) = census.ward() else {
            return Err(StoreError::Corrupt("a census without a ward".into()));
        };
        let conn = self.inner.writer()?;
        conn.prepare_cached(
            "INSERT INTO census_docs (ward, id, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (ward) DO UPDATE SET data = ?3",
        )?
        .execute(params![
            ward,
            crate::census::census_id(&ward).to_string(),
            census.save()
        ])?;
        Ok(())
    }
}
