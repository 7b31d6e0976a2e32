//! Scanned documents on the server (docs/records-office.md, "Scanned documents"): a records
//! technician files a PDF or image on a chart, through the REST API, the console or
//! `chartsync-records attach`. What the file is comes from its bytes, never its name: a PDF is
//! read to count its pages (one that does not parse is refused), an image's header is read.
//! The file is kept in the store by its SHA-256, beside the chart's history, and the entry
//! that names it is committed with it. Tablets fetch a file only when someone opens it
//! (`chartsync/attachment-wanted`, server/src/sync.rs).

use std::sync::Arc;

use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartsync_core::chart::{AttachmentRef, ChartId, DocumentType, MediaType, Staff, Timestamp};
use chartsync_core::store::{
    Actor, AuditAction, ChartStore, NamedFile, ScannedDocument, StoreError,
};
use serde::Serialize;

use crate::api::actor;
use crate::auth::Access;
use crate::coding::{chart_id, on_wards, refused};
use crate::records::{settled, Refusal};
use crate::AppState;

/// `serve --max-attachment-mib`'s default: a 40-page scan at 300 dpi in greyscale.
pub(crate) const DEFAULT_MAX_ATTACHMENT_MIB: usize = 20;
/// The most `--max-attachment-mib` may be. The console's form takes bodies up to it, and
/// refuses a file past the server's setting as it reads it.
pub(crate) const MAX_ATTACHMENT_MIB_LIMIT: usize = 512;

/// What a file is, by its first bytes, and how many pages it has. A PDF is read whole (its
/// page tree counted); a JPEG or PNG is one page once its header reads.
pub(crate) fn inspect(bytes: &[u8]) -> Result<(MediaType, u32), String> {
    if bytes.starts_with(b"%PDF-") {
        let doc = lopdf::Document::load_mem(bytes).map_err(|_| {
            "the PDF could not be read: it is damaged, or locked with a password".to_string()
        })?;
        let pages = doc.get_pages().len();
        if pages == 0 {
            return Err("the PDF has no pages".into());
        }
        let pages = u32::try_from(pages).map_err(|_| "the PDF has too many pages".to_string())?;
        return Ok((MediaType::Pdf, pages));
    }
    let media_type = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        MediaType::Jpeg
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        MediaType::Png
    } else {
        return Err(
            "not a PDF, JPEG or PNG file (scan to PDF, or convert a TIFF or other file to PDF first)"
                .into(),
        );
    };
    imagesize::blob_size(bytes)
        .map_err(|_| "the image could not be read: it is damaged".to_string())?;
    Ok((media_type, 1))
}

/// The largest body a form filing a file of up to `max_file` bytes may have: the file and
/// the form's other fields.
pub(crate) fn form_limit(max_file: usize) -> usize {
    max_file + 64 * 1024
}

/// What a form (the REST API's or the console's) says of a document to file.
#[derive(Default)]
pub(crate) struct Upload {
    pub title: String,
    pub document_type: String,
    pub document_date: Option<String>,
    pub description: String,
    pub file: Vec<u8>,
    /// The console's CSRF token, when the form is the console's.
    pub csrf: String,
}

impl Upload {
    /// Reads a multipart form: `file`, `title`, `document_type`, and optionally
    /// `document_date` and `description` (and `csrf` from the console). A file past `max`
    /// bytes, or a form that does not arrive whole, is refused.
    pub(crate) async fn read(mut form: Multipart, max: usize) -> Result<Upload, Refusal> {
        let too_large = || {
            Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the file is larger than the {} MiB a scanned document may be",
                    max >> 20
                ),
            )
        };
        // A body past the route's limit, or a form cut short.
        let broken = |e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                Refusal(
                    StatusCode::BAD_REQUEST,
                    "the form did not arrive whole: send it again".into(),
                )
            }
        };
        let mut up = Upload::default();
        while let Some(field) = form.next_field().await.map_err(broken)? {
            let name = field.name().unwrap_or("").to_string();
            let bytes = field.bytes().await.map_err(broken)?;
            let text = || String::from_utf8_lossy(&bytes).trim().to_string();
            match name.as_str() {
                "file" => up.file = bytes.to_vec(),
                "title" => up.title = text(),
                "document_type" => up.document_type = text(),
                "document_date" => up.document_date = Some(text()).filter(|d| !d.is_empty()),
                "description" => up.description = text(),
                "csrf" => up.csrf = text(),
                _ => {}
            }
        }
        if up.file.len() > max {
            return Err(too_large());
        }
        Ok(up)
    }
}

/// A document filed: its entry and what the chart says of its file.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Filed {
    pub entry_id: String,
    pub attachment: AttachmentRef,
    /// The chart already named this file and the server had lost it (restored from a backup
    /// older than the filing): the file is back, under the entry that names it, and no new
    /// entry was made.
    pub restored: bool,
}

/// What the server answers for a file a chart names and it lacks.
pub(crate) const MISSING_FILE: &str = "the server does not have this document's file: it was \
     filed after the backup the server was restored from. File the same document again to \
     restore it (a tablet that opened it sends it back on its own)";

/// Files `up` on chart `id` as the signed-in person: the file checked, then the entry and
/// the file committed together and audited.
pub(crate) async fn file(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    device: &'static str,
    id: ChartId,
    up: Upload,
) -> Result<Filed, Refusal> {
    let unprocessable = |text: String| Refusal(StatusCode::UNPROCESSABLE_ENTITY, text);
    if up.file.is_empty() {
        return Err(unprocessable("choose the file to attach".into()));
    }
    if up.title.is_empty() {
        return Err(unprocessable("give the document a title".into()));
    }
    let document_type =
        DocumentType::from_token(&up.document_type).map_err(|e| unprocessable(e.to_string()))?;
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        // Read before anything is written: a damaged file changes nothing.
        let (media_type, pages) = match inspect(&up.file) {
            Ok(found) => found,
            Err(why) => return Ok(Err(unprocessable(why))),
        };
        if let Err(r) = on_wards(&store, &access, &who, id, "scanned document")? {
            return Ok(Err(r));
        }
        // The file of a document the chart names, lost in a restore: put back, no new entry.
        if chartsync_core::chart::files_scanned_documents(access.role) {
            if let Some(attachment) = store.restore_attachment(&who, id, &up.file, "filed again")?
            {
                let entry_id = store
                    .read(id, |c| c.view())?
                    .map_err(|error| StoreError::Chart { id, error })?
                    .entries
                    .into_iter()
                    .find(|e| {
                        e.content
                            .attachment
                            .as_ref()
                            .is_some_and(|a| a.hash == attachment.hash)
                    })
                    .map(|e| e.id)
                    .unwrap_or_default();
                tracing::info!(chart = %id, entry = %entry_id, bytes = attachment.size, "a scanned document's file restored");
                return Ok(Ok(Filed {
                    entry_id,
                    attachment,
                    restored: true,
                }));
            }
        }
        let by = Staff::new(access.user.clone(), access.role, device);
        let doc = ScannedDocument {
            media_type,
            pages,
            title: up.title,
            document_type,
            document_date: up.document_date,
            body: up.description,
        };
        Ok::<_, StoreError>(
            match store.file_scanned_document(&who, &by, id, Timestamp::now(), doc, &up.file) {
                Ok((entry_id, attachment)) => {
                    tracing::info!(chart = %id, entry = %entry_id, bytes = attachment.size, "scanned document filed");
                    Ok(Filed {
                        entry_id,
                        attachment,
                        restored: false,
                    })
                }
                Err(StoreError::Chart { error, .. }) => Err(refused(error)),
                Err(StoreError::Invalid(why)) => Err(unprocessable(why)),
                Err(e) => return Err(e),
            },
        )
    })
    .await;
    settled(result)
}

/// A file a chart names, as the person on its ward reads it: audited as a read of the chart.
pub(crate) async fn read(
    store: Arc<ChartStore>,
    access: &Access,
    who: Actor,
    id: ChartId,
    hash: String,
) -> Result<(MediaType, Vec<u8>), Refusal> {
    let access = access.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let Err(r) = on_wards(&store, &access, &who, id, "scanned document")? {
            return Ok(Err(r));
        }
        let not_found = || {
            Refusal(
                StatusCode::NOT_FOUND,
                format!("chart {id} has no scanned document with that file"),
            )
        };
        if !chartsync_core::chart::is_sha256_hex(&hash) {
            return Ok(Err(not_found()));
        }
        match store.named_file(id, &hash)? {
            NamedFile::Here => {}
            NamedFile::NotNamed => return Ok(Err(not_found())),
            NamedFile::Missing(_) => {
                return Ok(Err(Refusal(StatusCode::NOT_FOUND, MISSING_FILE.into())))
            }
        }
        let (Some(meta), Some(bytes)) = (store.attachment(&hash)?, store.attachment_bytes(&hash)?)
        else {
            return Ok(Err(not_found()));
        };
        let detail = format!("scanned document {} opened", &hash[..12]);
        store.record_audit(&who, AuditAction::Read, Some(id), Some(&detail))?;
        Ok::<_, StoreError>(Ok((meta.media_type, bytes)))
    })
    .await;
    settled(result)
}

/// The file as a download: its own type, never sniffed, never cached.
pub(crate) fn download_response(hash: &str, media_type: MediaType, bytes: Vec<u8>) -> Response {
    let extension = match media_type {
        MediaType::Pdf => "pdf",
        MediaType::Jpeg => "jpg",
        MediaType::Png => "png",
    };
    let disposition = format!("inline; filename=\"{}.{extension}\"", &hash[..12]);
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media_type.token()),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The form `POST /api/charts/{id}/attachments` takes (multipart/form-data).
#[allow(dead_code)] // Read by `Upload::read`, field by field; this is its schema.
#[derive(utoipa::ToSchema)]
pub(crate) struct UploadForm {
    /// The scan: a PDF, JPEG or PNG, up to `serve --max-attachment-mib`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// What the document is called on the chart ("Consent to surgery").
    title: String,
    /// `consent`, `advance_directive`, `outside_record`, `correspondence`, `identification`,
    /// `insurance` or `other`.
    document_type: String,
    /// The date the document bears, YYYY-MM-DD.
    document_date: Option<String>,
    /// A description, shown under the title.
    description: Option<String>,
}

/// A scanned document's file, as it was filed.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(crate) struct FileBytes(Vec<u8>);

/// `POST /api/charts/{id}/attachments` (multipart/form-data: `file`, `title`,
/// `document_type`, optional `document_date` YYYY-MM-DD and `description`): files a scanned
/// document on the chart; 201 with the entry's id and what the chart says of the file.
#[utoipa::path(
    post,
    operation_id = "file_scanned_document",
    path = "/api/charts/{id}/attachments",
    tag = "charts",
    summary = "Files a scanned document on the chart, or puts back a file a restore lost",
    params(("id" = String, Path, description = "the chart's id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "filed: the entry and what the chart says of the file", body = Filed), (status = 200, description = "the chart names this file and the server had lost it (a restore): put back under its entry, no new entry (`restored`)", body = Filed), (status = 400, description = "the form did not arrive whole", body = crate::openapi::ApiError), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "no such chart", body = crate::openapi::ApiError), (status = 413, description = "the file is larger than `--max-attachment-mib`", body = crate::openapi::ApiError), (status = 422, description = "not a PDF, JPEG or PNG that reads, or a field missing or unknown", body = crate::openapi::ApiError))
)]
pub async fn upload(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Multipart,
) -> Response {
    let id = match chart_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let up = match Upload::read(form, app.max_attachment_bytes).await {
        Ok(up) => up,
        Err(r) => return r.into_response(),
    };
    let who = actor(&access, &headers);
    match file(app.store.clone(), &access, who, "records-api", id, up).await {
        Ok(filed) if filed.restored => (StatusCode::OK, Json(filed)).into_response(),
        Ok(filed) => (StatusCode::CREATED, Json(filed)).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `GET /api/charts/{id}/attachments/{hash}`: the file of one of the chart's scanned
/// documents.
#[utoipa::path(
    get,
    operation_id = "scanned_document_file",
    path = "/api/charts/{id}/attachments/{hash}",
    tag = "charts",
    summary = "The file of one of the chart's scanned documents (audited as opened)",
    params(("id" = String, Path, description = "the chart's id"), ("hash" = String, Path, description = "the file's SHA-256, 64 hex digits, as the chart names it")),
    responses((status = 200, description = "the file, as its own type, never cached", content((FileBytes = "application/pdf"), (FileBytes = "image/jpeg"), (FileBytes = "image/png"))), (status = 401, description = "no valid bearer token", body = crate::openapi::ApiError), (status = 403, description = "the role or wards do not allow it", body = crate::openapi::ApiError), (status = 404, description = "the chart names no such file, or the server lost it in a restore (the reason says; file it again)", body = crate::openapi::ApiError))
)]
pub async fn download(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    Path((id, hash)): Path<(String, String)>,
) -> Response {
    let id = match chart_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let who = actor(&access, &headers);
    match read(app.store.clone(), &access, who, id, hash.clone()).await {
        Ok((media_type, bytes)) => download_response(&hash, media_type, bytes),
        Err(r) => r.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pdf_s_pages_are_counted() {
        let consent = include_bytes!("../../tests/fixtures/consent-3-pages.pdf");
        assert_eq!(inspect(consent).unwrap(), (MediaType::Pdf, 3));
    }

    #[test]
    fn a_file_is_what_its_bytes_say() {
        assert!(inspect(b"GIF89a....").unwrap_err().contains("not a PDF"));
        assert!(inspect(b"%PDF-1.4\nnot really")
            .unwrap_err()
            .contains("could not be read"));
        assert!(inspect(b"\x89PNG\r\n\x1a\nshort")
            .unwrap_err()
            .contains("damaged"));
    }
}
