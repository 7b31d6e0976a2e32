//! REST lists a page at a time: `?limit=N` (1 to 10,000; 1,000 when not given) and
//! `?offset=M`, the whole list's length in `X-Total-Count`, and the neighbouring pages in a
//! `Link` header (RFC 8288, `rel="next"` and `rel="prev"`), so a list's body keeps its shape.

use std::collections::HashMap;

use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;

use crate::records::Refusal;

/// Rows a page holds when the caller does not say.
pub const DEFAULT_LIMIT: usize = 1_000;
/// The most rows one page holds.
pub const MAX_LIMIT: usize = 10_000;

/// Where a page of a list starts, and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paging {
    pub limit: usize,
    pub offset: usize,
}

impl Paging {
    /// The page a query asks for; a limit or offset that is not a number, or a limit out of
    /// range, is refused by name.
    pub fn of(query: &HashMap<String, String>) -> Result<Paging, Refusal> {
        let number = |name: &str, default: usize| match query.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| Refusal(StatusCode::BAD_REQUEST, format!("{name} is a whole number"))),
        };
        let limit = number("limit", DEFAULT_LIMIT)?;
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!("limit is from 1 to {MAX_LIMIT}"),
            ));
        }
        Ok(Paging {
            limit,
            offset: number("offset", 0)?,
        })
    }

    /// This page of `items`, answered by `body`, with the total and the links to its
    /// neighbours (on `uri`, the request's own).
    pub fn respond<T>(
        &self,
        uri: &Uri,
        items: Vec<T>,
        body: impl FnOnce(Vec<T>) -> Response,
    ) -> Response {
        let total = items.len();
        let page: Vec<T> = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        let mut response = body(page);
        let mut links = Vec::new();
        if self.offset + self.limit < total {
            links.push(format!(
                "<{}>; rel=\"next\"",
                self.at(uri, self.offset + self.limit)
            ));
        }
        if self.offset > 0 {
            links.push(format!(
                "<{}>; rel=\"prev\"",
                self.at(uri, self.offset.saturating_sub(self.limit))
            ));
        }
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static("x-total-count"),
            HeaderValue::from(total),
        );
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            if !links.is_empty() {
                headers.insert(axum::http::header::LINK, v);
            }
        }
        response
    }

    /// The request's URL at another offset, its other parameters kept.
    fn at(&self, uri: &Uri, offset: usize) -> String {
        let mut pairs: Vec<(String, String)> = uri
            .query()
            .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
            .unwrap_or_default();
        pairs.retain(|(k, _)| k != "limit" && k != "offset");
        pairs.push(("limit".into(), self.limit.to_string()));
        pairs.push(("offset".into(), offset.to_string()));
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{}?{query}", uri.path())
    }
}
