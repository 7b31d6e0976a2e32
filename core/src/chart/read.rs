//! Reading the document into views. The readers are strict: a field of the wrong automerge
//! type, an unknown token or a malformed time is a [`ChartError::Schema`] naming the path. The
//! same readers are the schema check that validation runs on records a change touched.

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use super::error::ChartError;
use super::keys;
use super::types::*;
use super::view::*;

/// Reads a document at its current heads, or as it was at some earlier heads.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a, D: ReadDoc = Automerge> {
    pub doc: &'a D,
    pub heads: Option<&'a [ChangeHash]>,
    /// One record's fields, read in one pass (see [`Reader::on`]).
    fields: Option<&'a Fields>,
}

/// Every visible field of one map, as one `map_range` read them. automerge 0.12 seeks from
/// the object's start for each `get` (about 10 µs in a busy chart): a record of a dozen
/// fields read this way costs one seek instead of a dozen.
pub(crate) struct Fields {
    obj: ObjId,
    items: Vec<(String, Value<'static>, ObjId)>,
}

/// 64 lowercase hex digits: how a SHA-256 is written in a chart.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn schema_err(path: &str, reason: impl Into<String>) -> ChartError {
    ChartError::Schema {
        path: path.to_string(),
        reason: reason.into(),
    }
}

impl<'a, D: ReadDoc> Reader<'a, D> {
    pub fn new(doc: &'a D) -> Self {
        Reader {
            doc,
            heads: None,
            fields: None,
        }
    }

    pub fn at(doc: &'a D, heads: &'a [ChangeHash]) -> Self {
        Reader {
            doc,
            heads: Some(heads),
            fields: None,
        }
    }

    /// Runs `read` with every field of the map `obj` read in one pass: its reads of
    /// `obj`'s own fields are answered from that pass, the rest from the document.
    pub fn on<T>(
        &self,
        obj: &ObjId,
        read: impl FnOnce(&Reader<'_, D>) -> Result<T, ChartError>,
    ) -> Result<T, ChartError> {
        if self.fields.is_some_and(|f| &f.obj == obj) {
            return read(self);
        }
        let fields = Fields {
            obj: obj.clone(),
            items: self.map_fields(obj),
        };
        read(&Reader {
            doc: self.doc,
            heads: self.heads,
            fields: Some(&fields),
        })
    }

    /// Every visible key of the map `obj`, with its value and that value's id, in one pass.
    fn map_fields(&self, obj: &ObjId) -> Vec<(String, Value<'static>, ObjId)> {
        let item = |i: automerge::iter::MapRangeItem<'_>| {
            let id = i.id();
            (i.key.into_owned(), i.value.into_value(), id)
        };
        match self.heads {
            None => self.doc.map_range(obj, ..).map(item).collect(),
            Some(h) => self.doc.map_range_at(obj, .., h).map(item).collect(),
        }
    }

    fn get(&self, obj: &ObjId, key: &str) -> Result<Option<(Value<'a>, ObjId)>, ChartError> {
        if let Some(f) = self.fields.filter(|f| &f.obj == obj) {
            return Ok(f
                .items
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, v, id)| (v.clone(), id.clone())));
        }
        Ok(match self.heads {
            None => self.doc.get(obj, key)?,
            Some(h) => self.doc.get_at(obj, key, h)?,
        })
    }

    fn object(&self, obj: &ObjId, key: &str, ty: ObjType, path: &str) -> Result<ObjId, ChartError> {
        match self.get(obj, key)? {
            Some((Value::Object(t), id)) if t == ty => Ok(id),
            Some(_) => Err(schema_err(path, format!("{key} must be a {ty:?}"))),
            None => Err(schema_err(path, format!("{key} is missing"))),
        }
    }

    pub fn map(&self, obj: &ObjId, key: &str, path: &str) -> Result<ObjId, ChartError> {
        self.object(obj, key, ObjType::Map, path)
    }

    pub fn list(&self, obj: &ObjId, key: &str, path: &str) -> Result<ObjId, ChartError> {
        self.object(obj, key, ObjType::List, path)
    }

    /// An optional string register: absent and null both read as None.
    pub fn opt_str(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Option<String>, ChartError> {
        match self.get(obj, key)? {
            None => Ok(None),
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(Some(s.to_string())),
                ScalarValue::Null => Ok(None),
                _ => Err(schema_err(path, format!("{key} must be a string"))),
            },
            Some(_) => Err(schema_err(
                path,
                format!("{key} must be a string, not an object"),
            )),
        }
    }

    pub fn str(&self, obj: &ObjId, key: &str, path: &str) -> Result<String, ChartError> {
        self.opt_str(obj, key, path)?
            .ok_or_else(|| schema_err(path, format!("{key} is missing")))
    }

    /// A required, non-empty string.
    pub fn nonempty(&self, obj: &ObjId, key: &str, path: &str) -> Result<String, ChartError> {
        let s = self.str(obj, key, path)?;
        if s.trim().is_empty() {
            return Err(schema_err(path, format!("{key} is empty")));
        }
        Ok(s)
    }

    pub fn token<T>(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
        parse: fn(&str) -> Result<T, ChartError>,
    ) -> Result<T, ChartError> {
        let s = self.str(obj, key, path)?;
        parse(&s).map_err(|e| schema_err(path, format!("{key}: {e}")))
    }

    pub fn opt_token<T>(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
        parse: fn(&str) -> Result<T, ChartError>,
    ) -> Result<Option<T>, ChartError> {
        match self.opt_str(obj, key, path)? {
            None => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .map_err(|e| schema_err(path, format!("{key}: {e}"))),
        }
    }

    pub fn time(&self, obj: &ObjId, key: &str, path: &str) -> Result<Timestamp, ChartError> {
        self.token(obj, key, path, Timestamp::parse)
    }

    pub fn opt_time(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Option<Timestamp>, ChartError> {
        self.opt_token(obj, key, path, Timestamp::parse)
    }

    /// The object of a collaborative text field.
    pub fn text_obj(&self, obj: &ObjId, key: &str) -> Result<ObjId, ChartError> {
        self.object(obj, key, ObjType::Text, key)
    }

    /// A collaborative text field (automerge Text).
    pub fn text(&self, obj: &ObjId, key: &str, path: &str) -> Result<String, ChartError> {
        let id = self.object(obj, key, ObjType::Text, path)?;
        Ok(match self.heads {
            None => self.doc.text(&id)?,
            Some(h) => self.doc.text_at(&id, h)?,
        })
    }

    /// The elements of a list, which must all be maps.
    pub fn map_items(&self, list: &ObjId, path: &str) -> Result<Vec<ObjId>, ChartError> {
        let items: Vec<_> = match self.heads {
            None => self
                .doc
                .list_range(list, ..)
                .map(|i| {
                    let id = i.id();
                    (i.value.into_value(), id)
                })
                .collect(),
            Some(h) => self
                .doc
                .list_range_at(list, .., h)
                .map(|i| {
                    let id = i.id();
                    (i.value.into_value(), id)
                })
                .collect(),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(n, (v, id))| match v {
                Value::Object(ObjType::Map) => Ok(id),
                _ => Err(schema_err(
                    &format!("{path}/{n}"),
                    "list items must be maps",
                )),
            })
            .collect()
    }

    /// An optional list of strings: absent and null both read as None.
    pub fn opt_str_list(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Option<Vec<String>>, ChartError> {
        match self.get(obj, key)? {
            None => Ok(None),
            Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => Ok(None),
            Some(_) => self.str_list(obj, key, path).map(Some),
        }
    }

    /// A number of cents, stored as a string of decimal digits.
    pub fn opt_cents(&self, obj: &ObjId, key: &str, path: &str) -> Result<Option<u64>, ChartError> {
        self.opt_token(obj, key, path, parse_cents)
    }

    /// A list of strings.
    pub fn str_list(&self, obj: &ObjId, key: &str, path: &str) -> Result<Vec<String>, ChartError> {
        let list = self.list(obj, key, path)?;
        let items: Vec<_> = match self.heads {
            None => self
                .doc
                .list_range(&list, ..)
                .map(|i| i.value.into_value())
                .collect(),
            Some(h) => self
                .doc
                .list_range_at(&list, .., h)
                .map(|i| i.value.into_value())
                .collect(),
        };
        items
            .into_iter()
            .map(|v| match v.as_str() {
                Some(s) => Ok(s.to_string()),
                None => Err(schema_err(path, format!("{key} must hold strings"))),
            })
            .collect()
    }

    /// The keys and values of a map whose values must all be maps (a section keyed by id).
    pub fn map_entries(&self, map: &ObjId, path: &str) -> Result<Vec<(String, ObjId)>, ChartError> {
        self.map_fields(map)
            .into_iter()
            .map(|(k, v, id)| match v {
                Value::Object(ObjType::Map) => Ok((k, id)),
                _ => Err(schema_err(&format!("{path}/{k}"), "must be a map")),
            })
            .collect()
    }

    /// A map of string values (form fields).
    pub fn str_map(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ChartError> {
        let map = self.map(obj, key, path)?;
        self.map_fields(&map)
            .into_iter()
            .map(|(k, v, _)| match v.as_str() {
                Some(s) => Ok((k, s.to_string())),
                None => Err(schema_err(path, format!("{key}/{k} must be a string"))),
            })
            .collect()
    }

    pub fn section(&self, key: &str) -> Result<ObjId, ChartError> {
        let ty = keys::section_type(key).unwrap_or(ObjType::Map);
        self.object(&ROOT, key, ty, key)
    }

    // ----- records -----

    pub fn schema(&self) -> Result<String, ChartError> {
        match self.get(&ROOT, keys::SCHEMA)? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(s.to_string()),
                _ => Err(ChartError::NotAChart("schema is not a string".into())),
            },
            Some((Value::Object(t), _)) => Err(ChartError::NotAChart(format!(
                "schema is a {t:?}, not a string"
            ))),
            None => Err(ChartError::NotAChart("no schema key".into())),
        }
    }

    pub fn patient(&self) -> Result<PatientView, ChartError> {
        let p = self.section(keys::PATIENT)?;
        self.on(&p, |r| {
            let path = keys::PATIENT;
            let mrn = r.str(&p, "mrn", path)?;
            check_identifier("mrn", &mrn).map_err(|e| schema_err(path, e.to_string()))?;
            let birth_date = r.opt_str(&p, "birth_date", path)?;
            if let Some(d) = &birth_date {
                check_date(d).map_err(|e| schema_err(path, e.to_string()))?;
            }
            Ok(PatientView {
                mrn,
                family_name: r.str(&p, "family_name", path)?,
                given_names: r.str(&p, "given_names", path)?,
                birth_date,
                sex: r.opt_token(&p, "sex", path, Sex::from_token)?,
                address: r.opt_str(&p, "address", path)?,
                phone: r.opt_str(&p, "phone", path)?,
            })
        })
    }

    pub fn encounter(&self) -> Result<EncounterView, ChartError> {
        let e = self.section(keys::ENCOUNTER)?;
        self.on(&e, |r| {
            let path = keys::ENCOUNTER;
            Ok(EncounterView {
                ward: r.nonempty(&e, "ward", path)?,
                bed: r.opt_str(&e, "bed", path)?,
                class: r.token(&e, "class", path, EncounterClass::from_token)?,
                admitted_at: r.time(&e, "admitted_at", path)?,
                admit_source: r.opt_str(&e, "admit_source", path)?,
                attending: r.opt_str(&e, "attending", path)?,
                discharged_at: r.opt_time(&e, "discharged_at", path)?,
                discharge_disposition: r.opt_str(&e, "discharge_disposition", path)?,
                status: r.token(&e, "status", path, EncounterStatus::from_token)?,
            })
        })
    }

    pub fn event(&self, obj: &ObjId, path: &str) -> Result<EventView, ChartError> {
        self.on(obj, |r| {
            let changed_fields = match r.get(obj, "changed_fields")? {
                None => Vec::new(),
                Some(_) => r.str_list(obj, "changed_fields", path)?,
            };
            Ok(EventView {
                id: r.token(obj, "id", path, |s| {
                    check_record_id(s).map(|_| s.to_string())
                })?,
                kind: r.token(obj, "kind", path, EventKind::from_token)?,
                at: r.time(obj, "at", path)?,
                by: r.nonempty(obj, "by", path)?,
                ward: r.opt_str(obj, "ward", path)?,
                bed: r.opt_str(obj, "bed", path)?,
                from_ward: r.opt_str(obj, "from_ward", path)?,
                from_bed: r.opt_str(obj, "from_bed", path)?,
                disposition: r.opt_str(obj, "disposition", path)?,
                changed_fields,
            })
        })
    }

    pub fn codes(&self, obj: &ObjId, key: &str, path: &str) -> Result<Vec<CodeRef>, ChartError> {
        let list = self.list(obj, key, path)?;
        let mut out = Vec::new();
        for (n, item) in self.map_items(&list, path)?.iter().enumerate() {
            let p = format!("{path}/{key}/{n}");
            // Codes are checked when written and when a change arrives, not on every read:
            // a later code-set year must not make an older chart unreadable.
            out.push(self.on(item, |r| {
                Ok(CodeRef {
                    system: r.str(item, "system", &p)?,
                    code: r.str(item, "code", &p)?,
                    display: r.opt_str(item, "display", &p)?,
                })
            })?);
        }
        Ok(out)
    }

    /// The signed part of an entry.
    pub fn entry_content(&self, obj: &ObjId, path: &str) -> Result<EntryContent, ChartError> {
        self.on(obj, |r| {
            Ok(EntryContent {
                kind: r.token(obj, "kind", path, EntryKind::from_token)?,
                author: r.nonempty(obj, "author", path)?,
                role: r.token(obj, "role", path, Role::from_token)?,
                recorded_at: r.time(obj, "recorded_at", path)?,
                effective_at: r.opt_time(obj, "effective_at", path)?,
                codes: r.codes(obj, "codes", path)?,
                value: r.opt_str(obj, "value", path)?,
                unit: r.opt_str(obj, "unit", path)?,
                body: r.text(obj, "body", path)?,
                attachment: r.attachment(obj, path)?,
            })
        })
    }

    /// A scanned document's file (`attachment`, a Map): required on a `scanned_document`,
    /// refused on any other kind.
    fn attachment(&self, entry: &ObjId, path: &str) -> Result<Option<AttachmentRef>, ChartError> {
        let kind = self.token(entry, "kind", path, EntryKind::from_token)?;
        let obj = match self.get(entry, "attachment")? {
            None if kind != EntryKind::ScannedDocument => return Ok(None),
            Some((Value::Scalar(s), _)) if kind != EntryKind::ScannedDocument && s.is_null() => {
                return Ok(None)
            }
            Some(_) if kind != EntryKind::ScannedDocument => {
                return Err(schema_err(
                    path,
                    "only a scanned_document has an attachment",
                ))
            }
            _ => self.map(entry, "attachment", path)?,
        };
        let path = format!("{path}/attachment");
        let path = path.as_str();
        self.on(&obj, |r| {
            let hash = r.str(&obj, "hash", path)?;
            if !is_sha256_hex(&hash) {
                return Err(schema_err(path, "hash must be 64 lowercase hex digits"));
            }
            let document_date = r.opt_str(&obj, "document_date", path)?;
            if let Some(d) = &document_date {
                check_date(d).map_err(|e| schema_err(path, e.to_string()))?;
            }
            Ok(Some(AttachmentRef {
                hash,
                media_type: r.token(&obj, "media_type", path, MediaType::from_token)?,
                size: r.count(&obj, "size", path)?,
                pages: u32::try_from(r.count(&obj, "pages", path)?)
                    .map_err(|_| schema_err(path, "pages is out of range"))?,
                title: r.nonempty(&obj, "title", path)?,
                document_type: r.token(&obj, "document_type", path, DocumentType::from_token)?,
                document_date,
            }))
        })
    }

    /// A count of one or more, stored as a str of decimal digits without a leading zero.
    fn count(&self, obj: &ObjId, key: &str, path: &str) -> Result<u64, ChartError> {
        let s = self.str(obj, key, path)?;
        let canonical = !s.is_empty()
            && s.len() <= 15
            && s.bytes().all(|b| b.is_ascii_digit())
            && !s.starts_with('0');
        match s.parse::<u64>() {
            Ok(n) if canonical => Ok(n),
            _ => Err(schema_err(
                path,
                format!("{key} must be a count written in decimal digits, as a string"),
            )),
        }
    }

    /// An entry without the parts derived from signatures and amendments.
    pub fn entry(&self, id: &str, obj: &ObjId) -> Result<EntryView, ChartError> {
        self.on(obj, |r| {
            let path = format!("{}/{id}", keys::ENTRIES);
            check_record_id(id).map_err(|e| schema_err(&path, e.to_string()))?;
            Ok(EntryView {
                id: id.to_string(),
                content: r.entry_content(obj, &path)?,
                device: r.nonempty(obj, "device", &path)?,
                shift: r.opt_token(obj, "shift", &path, Shift::from_token)?,
                status: r.token(obj, "status", &path, EntryStatus::from_token)?,
                signed: false,
                edited_after_signing: false,
            })
        })
    }

    pub fn signature(&self, obj: &ObjId, path: &str) -> Result<SignatureView, ChartError> {
        self.on(obj, |r| {
            let heads = r.str_list(obj, "heads", path)?;
            for h in &heads {
                h.parse::<ChangeHash>()
                    .map_err(|_| schema_err(path, "heads must be hex change hashes"))?;
            }
            let content_hash = r.str(obj, "content_hash", path)?;
            if !is_sha256_hex(&content_hash) {
                return Err(schema_err(
                    path,
                    "content_hash must be 64 lowercase hex digits",
                ));
            }
            Ok(SignatureView {
                entry_id: r.nonempty(obj, "entry_id", path)?,
                signer: r.nonempty(obj, "signer", path)?,
                role: r.token(obj, "role", path, Role::from_token)?,
                meaning: r.token(obj, "meaning", path, SignatureMeaning::from_token)?,
                signed_at: r.time(obj, "signed_at", path)?,
                heads,
                content_hash,
            })
        })
    }

    pub fn amendment(&self, obj: &ObjId, path: &str) -> Result<AmendmentView, ChartError> {
        self.on(obj, |r| {
            Ok(AmendmentView {
                id: r.token(obj, "id", path, |s| {
                    check_record_id(s).map(|_| s.to_string())
                })?,
                target_entry_id: r.nonempty(obj, "target_entry_id", path)?,
                target_hash: r.nonempty(obj, "target_hash", path)?,
                kind: r.token(obj, "kind", path, AmendmentKind::from_token)?,
                reason: r.nonempty(obj, "reason", path)?,
                body: r.str(obj, "body", path)?,
                author: r.nonempty(obj, "author", path)?,
                role: r.token(obj, "role", path, Role::from_token)?,
                at: r.time(obj, "at", path)?,
            })
        })
    }

    pub fn coding(&self, id: &str, obj: &ObjId) -> Result<CodingView, ChartError> {
        self.on(obj, |r| {
            let path = format!("{}/{id}", keys::CODING);
            check_record_id(id).map_err(|e| schema_err(&path, e.to_string()))?;
            let system = r.str(obj, "system", &path)?;
            let code = r.str(obj, "code", &path)?;
            Ok(CodingView {
                id: id.to_string(),
                system,
                code,
                display: r.opt_str(obj, "display", &path)?,
                sequence: r.token(obj, "sequence", &path, CodingSequence::from_token)?,
                poa: r.opt_token(obj, "poa", &path, PresentOnAdmission::from_token)?,
                status: r.token(obj, "status", &path, CodingStatus::from_token)?,
                supporting_entries: r.str_list(obj, "supporting_entries", &path)?,
                coded_by: r.nonempty(obj, "coded_by", &path)?,
                coded_at: r.time(obj, "coded_at", &path)?,
            })
        })
    }

    pub fn query(&self, id: &str, obj: &ObjId) -> Result<QueryView, ChartError> {
        self.on(obj, |r| {
            let path = format!("{}/{id}", keys::QUERIES);
            check_record_id(id).map_err(|e| schema_err(&path, e.to_string()))?;
            let list = r.list(obj, "responses", &path)?;
            let mut responses = Vec::new();
            for (n, resp) in r.map_items(&list, &path)?.iter().enumerate() {
                let p = format!("{path}/responses/{n}");
                responses.push(QueryResponseView {
                    by: r.nonempty(resp, "by", &p)?,
                    at: r.time(resp, "at", &p)?,
                    text: r.nonempty(resp, "text", &p)?,
                });
            }
            Ok(QueryView {
                id: id.to_string(),
                kind: r
                    .opt_token(obj, "kind", &path, QueryKind::from_token)?
                    .unwrap_or(QueryKind::Query),
                question: r.nonempty(obj, "question", &path)?,
                to: r.nonempty(obj, "to", &path)?,
                asked_by: r.nonempty(obj, "asked_by", &path)?,
                asked_at: r.time(obj, "asked_at", &path)?,
                about: r.opt_str(obj, "about", &path)?,
                status: r.token(obj, "status", &path, QueryStatus::from_token)?,
                responses,
            })
        })
    }

    pub fn form(&self, id: &str, obj: &ObjId) -> Result<FormView, ChartError> {
        self.on(obj, |r| {
            let path = format!("{}/{id}", keys::FORMS);
            check_record_id(id).map_err(|e| schema_err(&path, e.to_string()))?;
            let list = r.list(obj, "signatures", &path)?;
            let mut signatures = Vec::new();
            for (n, s) in r.map_items(&list, &path)?.iter().enumerate() {
                let p = format!("{path}/signatures/{n}");
                signatures.push(FormSignatureView {
                    signer: r.nonempty(s, "signer", &p)?,
                    role: r.nonempty(s, "role", &p)?,
                    at: r.time(s, "at", &p)?,
                });
            }
            let required_signers = r.str_list(obj, "required_signers", &path)?;
            let missing_signers = required_signers
                .iter()
                .filter(|r| !signatures.iter().any(|s| &s.role == *r))
                .cloned()
                .collect();
            Ok(FormView {
                id: id.to_string(),
                form_type: r.token(obj, "type", &path, FormType::from_token)?,
                fields: r.str_map(obj, "fields", &path)?.into(),
                required_signers,
                signatures,
                created_by: r.nonempty(obj, "created_by", &path)?,
                created_at: r.time(obj, "created_at", &path)?,
                completed_at: r.opt_time(obj, "completed_at", &path)?,
                missing_signers,
            })
        })
    }

    pub fn roi_request(&self, id: &str, obj: &ObjId) -> Result<RoiRequestView, ChartError> {
        self.on(obj, |r| {
            let path = format!("{}/{id}", keys::ROI_REQUESTS);
            check_record_id(id).map_err(|e| schema_err(&path, e.to_string()))?;
            Ok(RoiRequestView {
                id: id.to_string(),
                requester: r.nonempty(obj, "requester", &path)?,
                recipient: r.nonempty(obj, "recipient", &path)?,
                recipient_address: r.nonempty(obj, "recipient_address", &path)?,
                purpose: r.token(obj, "purpose", &path, DisclosurePurpose::from_token)?,
                scope: r.nonempty(obj, "scope", &path)?,
                received_at: r.time(obj, "received_at", &path)?,
                due_at: r.time(obj, "due_at", &path)?,
                authorization: r.opt_str(obj, "authorization", &path)?,
                status: r.token(obj, "status", &path, RoiStatus::from_token)?,
                status_reason: r.opt_str(obj, "status_reason", &path)?,
                status_by: r.nonempty(obj, "status_by", &path)?,
                status_at: r.time(obj, "status_at", &path)?,
                delivery: r.opt_token(obj, "delivery", &path, RoiDelivery::from_token)?,
                extension: match r.opt_time(obj, "extended_at", &path)? {
                    None => None,
                    Some(at) => Some(RoiExtension {
                        by: r.nonempty(obj, "extended_by", &path)?,
                        at,
                        reason: r.nonempty(obj, "extension_reason", &path)?,
                        original_due_at: r.time(obj, "original_due_at", &path)?,
                    }),
                },
                sensitive_review: match r.opt_time(obj, "reviewed_at", &path)? {
                    None => None,
                    Some(at) => Some(SensitiveReview {
                        by: r.nonempty(obj, "reviewed_by", &path)?,
                        at,
                        categories: r
                            .opt_str_list(obj, "sensitive", &path)?
                            .unwrap_or_default()
                            .iter()
                            .map(|t| {
                                SensitiveCategory::from_token(t)
                                    .map_err(|e| schema_err(&path, format!("sensitive: {e}")))
                            })
                            .collect::<Result<_, _>>()?,
                    }),
                },
                fee: match r.opt_token(obj, "fee_basis", &path, FeeBasis::from_token)? {
                    None => None,
                    Some(basis) => {
                        let part =
                            |key| r.opt_cents(obj, key, &path).map(Option::unwrap_or_default);
                        Some(RoiFee {
                            basis,
                            labor_cents: part("fee_labor")?,
                            supplies_cents: part("fee_supplies")?,
                            postage_cents: part("fee_postage")?,
                            summary_cents: part("fee_summary")?,
                            total_cents: r.opt_cents(obj, "fee_total", &path)?.ok_or_else(
                                || schema_err(&path, "fee_total is missing".to_string()),
                            )?,
                        })
                    }
                },
            })
        })
    }

    pub fn disclosure(&self, obj: &ObjId, path: &str) -> Result<DisclosureView, ChartError> {
        self.on(obj, |r| {
            Ok(DisclosureView {
                id: r.token(obj, "id", path, |s| {
                    check_record_id(s).map(|_| s.to_string())
                })?,
                request_id: r.opt_str(obj, "request_id", path)?,
                authorization: r.opt_str(obj, "authorization", path)?,
                at: r.time(obj, "at", path)?,
                recipient: r.nonempty(obj, "recipient", path)?,
                recipient_address: r.nonempty(obj, "recipient_address", path)?,
                description: r.nonempty(obj, "description", path)?,
                purpose: r.token(obj, "purpose", path, DisclosurePurpose::from_token)?,
                by: r.nonempty(obj, "by", path)?,
            })
        })
    }

    pub fn case_log(&self, obj: &ObjId, path: &str) -> Result<CaseLogView, ChartError> {
        self.on(obj, |r| {
            Ok(CaseLogView {
                at: r.time(obj, "at", path)?,
                by: r.nonempty(obj, "by", path)?,
                text: r.nonempty(obj, "text", path)?,
            })
        })
    }

    pub fn handover(&self, obj: &ObjId, path: &str) -> Result<HandoverView, ChartError> {
        self.on(obj, |r| {
            Ok(HandoverView {
                from: r.nonempty(obj, "from", path)?,
                to: r.nonempty(obj, "to", path)?,
                shift: r.token(obj, "shift", path, Shift::from_token)?,
                at: r.time(obj, "at", path)?,
                summary: r.nonempty(obj, "summary", path)?,
            })
        })
    }

    /// Reads every element of an append-only section with `read`.
    pub fn log<T>(
        &self,
        key: &str,
        read: impl Fn(&Self, &ObjId, &str) -> Result<T, ChartError>,
    ) -> Result<Vec<T>, ChartError> {
        let list = self.section(key)?;
        self.map_items(&list, key)?
            .iter()
            .enumerate()
            .map(|(n, item)| read(self, item, &format!("{key}/{n}")))
            .collect()
    }

    /// Reads every record of a section keyed by id with `read`.
    pub fn records<T>(
        &self,
        key: &str,
        read: impl Fn(&Self, &str, &ObjId) -> Result<T, ChartError>,
    ) -> Result<Vec<T>, ChartError> {
        let map = self.section(key)?;
        self.map_entries(&map, key)?
            .iter()
            .map(|(id, obj)| read(self, id, obj))
            .collect()
    }
}

/// Validates a stored (system token, code) pair for the date `on` (its code-set year).
pub(crate) fn check_code(
    system: &str,
    code: &str,
    path: &str,
    on: Timestamp,
) -> Result<(), ChartError> {
    crate::codes::CodeSystem::from_token(system)
        .and_then(|system| crate::codes::check_on(system, code, on.date()))
        .map_err(|error| ChartError::InvalidCodeAt {
            path: path.to_string(),
            error,
        })
}
