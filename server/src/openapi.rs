//! The REST API's OpenAPI document (3.1), generated from the code: each documented handler
//! carries its `#[utoipa::path]` (method, path, parameters, body, answers) and is routed
//! through [`utoipa_axum::router::OpenApiRouter`], so a route cannot be served without being in
//! the document, nor documented without being served. The types it answers with derive their
//! schemas (the core's behind its `openapi` feature). Served at `GET /api/openapi.json`.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// What a refusal says: `{"error": "..."}`, ids and reasons only.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: String,
}

/// What a creation answers: the new record's id.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: String,
}

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "a person's token from `chartsync-server token`, with its role and wards",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chartsync records office API",
        description = "The REST behind the records console: worklists, chart completion, coding, release of information, accountings of disclosures, the patient index, audit trails and review queues. Every request carries a bearer token; every read and write is audited. Lists come a page at a time (`limit`, `offset`; the total in `X-Total-Count`, neighbours in `Link`)."
    ),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "worklist", description = "deficiencies, their routing, chart completion, delinquency, physicians"),
        (name = "coding", description = "the coding queue, code lookup, a chart's codes"),
        (name = "release of information", description = "requests for records and for accountings of disclosures"),
        (name = "charts", description = "finding charts, the patient index"),
        (name = "audit", description = "who read and wrote what"),
        (name = "review", description = "held changes and break-glass access"),
        (name = "retention", description = "retention rules, legal holds, destruction and its certificates"),
    )
)]
pub struct ApiDoc;
