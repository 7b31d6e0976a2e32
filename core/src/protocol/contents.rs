//! What one sync message may carry, checked before automerge reads it: how many changes, and
//! how many bytes its compressed parts inflate to. automerge inflates a compressed change, or
//! a document's compressed columns, with no limit: a few hundred kilobytes of deflate can
//! stand for gigabytes. Here each compressed part is inflated into nothing, counting, and
//! the count stops at the bound (RELIABILITY.md, "Bounds on a sync connection").
//!
//! The chunk layouts are automerge's storage format: a chunk is magic, checksum, type, body
//! length, body; a document's body starts with its actors, heads and the specifications of its
//! change and operation columns (id, type, a deflate bit, length), then the columns' data.

use std::io::Read;

use crate::chart::CHUNK_DOCUMENT;

/// A change chunk.
const CHUNK_CHANGE: u8 = 1;
/// A change chunk whose body is deflated.
const CHUNK_COMPRESSED: u8 = 2;
/// The bit of a column's specification that says its data is deflated.
const DEFLATE_BIT: u64 = 0b1000;

/// The bounds; the defaults suit a chart (a change is an entry or a form, kilobytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentBounds {
    /// Chunks (changes, or whole documents) in one message.
    pub changes_per_message: usize,
    /// Bytes one change, or one document, may inflate to.
    pub inflated_bytes_per_change: u64,
    /// Bytes all of a message's changes may inflate to.
    pub inflated_bytes_per_message: u64,
}

impl Default for ContentBounds {
    fn default() -> Self {
        ContentBounds {
            changes_per_message: 100_000,
            inflated_bytes_per_change: 16 * 1024 * 1024,
            inflated_bytes_per_message: 64 * 1024 * 1024,
        }
    }
}

/// Why a message's contents were refused, before anything was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("{count} changes in one message, over the bound of {limit}")]
    TooManyChanges { count: usize, limit: usize },
    #[error("a change inflates to more than {limit} bytes")]
    ChangeTooLarge { limit: u64 },
    #[error("the message's changes inflate to more than {limit} bytes")]
    MessageTooLarge { limit: u64 },
    #[error("the message's changes are not automerge data: {0}")]
    Malformed(&'static str),
}

/// What a message carries, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentSize {
    pub chunks: usize,
    pub inflated_bytes: u64,
}

/// Measures the chunks of a sync message's `changes` (its parts, each one or more chunks)
/// against `bounds`, inflating nothing into memory and copying nothing.
pub fn check<'a>(
    changes: impl IntoIterator<Item = &'a [u8]>,
    bounds: &ContentBounds,
) -> Result<ContentSize, ContentError> {
    let mut chunks = Vec::new();
    for part in changes {
        chunks.extend(
            crate::chart::chunks(part)
                .map_err(|_| ContentError::Malformed("no chunk structure"))?,
        );
    }
    if chunks.len() > bounds.changes_per_message {
        return Err(ContentError::TooManyChanges {
            count: chunks.len(),
            limit: bounds.changes_per_message,
        });
    }
    let mut total = 0u64;
    for chunk in &chunks {
        let (kind, body) = body_of(chunk.bytes)?;
        let room = bounds
            .inflated_bytes_per_change
            .min(bounds.inflated_bytes_per_message - total.min(bounds.inflated_bytes_per_message));
        let size = match kind {
            CHUNK_CHANGE => body.len() as u64,
            CHUNK_COMPRESSED => inflated(body, room)?,
            CHUNK_DOCUMENT => document_size(body, room)?,
            _ => {
                return Err(ContentError::Malformed(
                    "a chunk of a kind a sync does not carry",
                ))
            }
        };
        if size > bounds.inflated_bytes_per_change {
            return Err(ContentError::ChangeTooLarge {
                limit: bounds.inflated_bytes_per_change,
            });
        }
        total += size;
        if total > bounds.inflated_bytes_per_message {
            return Err(ContentError::MessageTooLarge {
                limit: bounds.inflated_bytes_per_message,
            });
        }
    }
    Ok(ContentSize {
        chunks: chunks.len(),
        inflated_bytes: total,
    })
}

/// A chunk's type and body (what follows its header).
fn body_of(chunk: &[u8]) -> Result<(u8, &[u8]), ContentError> {
    let kind = *chunk.get(8).ok_or(ContentError::Malformed("short chunk"))?;
    let mut at = 9;
    uleb(chunk, &mut at)?;
    Ok((kind, &chunk[at..]))
}

fn uleb(bytes: &[u8], at: &mut usize) -> Result<u64, ContentError> {
    let (mut value, mut shift) = (0u64, 0u32);
    loop {
        let b = *bytes
            .get(*at)
            .ok_or(ContentError::Malformed("truncated number"))?;
        *at += 1;
        if shift > 63 {
            return Err(ContentError::Malformed("number too long"));
        }
        value |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

fn skip(bytes: &[u8], at: &mut usize, n: u64) -> Result<(), ContentError> {
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| at.checked_add(n))
        .filter(|&e| e <= bytes.len())
        .ok_or(ContentError::Malformed("truncated document"))?;
    *at = end;
    Ok(())
}

/// How many bytes `deflated` inflates to, counting no further than one past `room`.
fn inflated(deflated: &[u8], room: u64) -> Result<u64, ContentError> {
    let decoder = flate2::read::DeflateDecoder::new(deflated);
    std::io::copy(
        &mut decoder.take(room.saturating_add(1)),
        &mut std::io::sink(),
    )
    .map_err(|_| ContentError::Malformed("a compressed part does not inflate"))
}

/// A document chunk's size once its deflated columns are inflated, counting no further than
/// one past `room`.
fn document_size(body: &[u8], room: u64) -> Result<u64, ContentError> {
    let mut at = 0;
    let actors = uleb(body, &mut at)?;
    for _ in 0..actors {
        let len = uleb(body, &mut at)?;
        skip(body, &mut at, len)?;
    }
    let heads = uleb(body, &mut at)?;
    skip(body, &mut at, heads.saturating_mul(32))?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        let n = uleb(body, &mut at)?;
        for _ in 0..n {
            let spec = uleb(body, &mut at)?;
            let len = uleb(body, &mut at)?;
            columns.push((spec & DEFLATE_BIT != 0, len));
        }
    }
    // The change columns' data, then the operation columns', in the order specified.
    let mut size = at as u64;
    for (deflated, len) in columns {
        let start = at;
        skip(body, &mut at, len)?;
        size += if deflated {
            inflated(&body[start..at], room.saturating_sub(size))?
        } else {
            len
        };
        if size > room {
            return Ok(size);
        }
    }
    Ok(size + (body.len() - at) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use std::io::Write;

    fn deflate(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A chunk of `kind` around `body` (the checksum is not checked here).
    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
        leb128::write::unsigned(&mut out, body.len() as u64).unwrap();
        out.extend_from_slice(body);
        out
    }

    fn small() -> ContentBounds {
        ContentBounds {
            changes_per_message: 3,
            inflated_bytes_per_change: 1024 * 1024,
            inflated_bytes_per_message: 2 * 1024 * 1024,
        }
    }

    #[test]
    fn real_changes_and_documents_pass_and_are_measured() {
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "note", "x".repeat(10_000))
            .unwrap();
        let saved = doc.save();
        let change = doc.get_changes(&[]).first().unwrap().raw_bytes().to_vec();
        let size = check([&saved[..], &change[..]], &small()).unwrap();
        assert_eq!(size.chunks, 2);
        assert!(size.inflated_bytes >= 20_000, "{size:?}");
        assert!(
            size.inflated_bytes < saved.len() as u64 + 40_000,
            "{size:?}"
        );
    }

    #[test]
    fn a_compressed_change_that_inflates_past_the_bound_is_refused() {
        let bomb = chunk(CHUNK_COMPRESSED, &deflate(&vec![0u8; 100 * 1024 * 1024]));
        assert!(bomb.len() < 200 * 1024, "{} bytes of deflate", bomb.len());
        assert_eq!(
            check([&bomb[..]], &small()),
            Err(ContentError::ChangeTooLarge { limit: 1024 * 1024 })
        );
    }

    #[test]
    fn a_document_whose_columns_inflate_past_the_bound_is_refused() {
        // No actors, no heads; one deflated change column of zeros, no operation columns.
        let data = deflate(&vec![0u8; 50 * 1024 * 1024]);
        let mut body = vec![0, 0, 1];
        let spec = (1u64 << 4) | DEFLATE_BIT;
        for n in [spec, data.len() as u64] {
            leb128::write::unsigned(&mut body, n).unwrap();
        }
        body.push(0);
        body.extend_from_slice(&data);
        assert_eq!(
            check([&chunk(CHUNK_DOCUMENT, &body)[..]], &small()),
            Err(ContentError::ChangeTooLarge { limit: 1024 * 1024 })
        );
    }

    #[test]
    fn many_changes_that_each_pass_are_refused_together() {
        let part = chunk(CHUNK_COMPRESSED, &deflate(&vec![0u8; 900 * 1024]));
        let three = [part.clone(), part.clone(), part.clone()].concat();
        assert_eq!(
            check([&three[..]], &small()),
            Err(ContentError::MessageTooLarge {
                limit: 2 * 1024 * 1024
            })
        );
        let four = [three, part].concat();
        assert_eq!(
            check([&four[..]], &small()),
            Err(ContentError::TooManyChanges { count: 4, limit: 3 })
        );
    }

    #[test]
    fn bytes_that_are_not_chunks_are_malformed_not_a_panic() {
        for junk in [
            &b"nonsense"[..],
            &chunk(CHUNK_COMPRESSED, b"not deflate")[..],
            &chunk(7, b"")[..],
        ] {
            assert!(
                matches!(check([junk], &small()), Err(ContentError::Malformed(_))),
                "{junk:?}"
            );
        }
    }
}
