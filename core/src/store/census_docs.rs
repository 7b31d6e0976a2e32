//! Ward census documents as the store keeps them (see `crate::census`).

use super::sql::{params, Begin, OptionalExtension};

use super::{ChartChanged, ChartStore, StoreError};

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
        bytes.map(|b| load(ward, &b)).transpose()
    }

    /// Every census document this store keeps (the server's, when it starts or takes over
    /// keeping them).
    pub fn census_docs(&self) -> Result<Vec<crate::census::Census>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = self.inner.with_reader(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT ward, data FROM census_docs ORDER BY ward")?;
            let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(|(ward, b)| load(&ward, &b)).collect()
    }

    /// The census document with this id, if this store keeps it.
    pub fn census_doc_by_id(
        &self,
        id: crate::chart::ChartId,
    ) -> Result<Option<crate::census::Census>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self.inner.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT ward, data FROM census_docs WHERE id = ?1",
                    [id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })?;
        row.map(|(ward, b)| load(&ward, &b)).transpose()
    }

    /// Keeps a ward's census document (replacing the one kept before).
    ///
    /// On a database shared by several server nodes only the single-writer lease's holder
    /// keeps censuses (anyone else is refused with [`StoreError::NotLeaseHolder`]), and the
    /// other nodes hear of the new census through the outbox, as of a chart's commit.
    pub fn save_census_doc(&self, census: &crate::census::Census) -> Result<(), StoreError> {
        let Some(ward) = census.ward() else {
            return Err(StoreError::Corrupt("a census without a ward".into()));
        };
        let id = crate::census::census_id(&ward);
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        self.inner.fence(&tx)?;
        tx.prepare_cached(
            "INSERT INTO census_docs (ward, id, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (ward) DO UPDATE SET data = ?3",
        )?
        .execute(params![ward, id.to_string(), census.save()])?;
        let mut heads = census.doc().get_heads();
        heads.sort();
        let event = ChartChanged {
            id,
            heads,
            sections: Default::default(),
            created: false,
        };
        super::outbox::record(&tx, &self.inner.node, &event)?;
        tx.commit()?;
        super::outbox::wake(&conn);
        Ok(())
    }
}

fn load(ward: &str, bytes: &[u8]) -> Result<crate::census::Census, StoreError> {
    crate::census::Census::load(bytes)
        .map_err(|_| StoreError::Corrupt(format!("the census of ward {ward} does not load")))
}
