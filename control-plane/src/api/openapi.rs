//! The OpenAPI 3.1 description of `/v1`, served at `GET /v1/openapi.json` (no token needed).
//!
//! Every route enters `/v1` through utoipa-axum's `routes!` in its module's `routes()`, which
//! registers the handler and its `#[utoipa::path]` description together, so the description
//! cannot name a route the router lacks or miss one it has (`tests/it/openapi.rs` checks
//! both ways). Body and answer shapes are in [`super::schema`]. [`finish`] adds what every
//! operation shares rather than repeating it on each: the bearer security requirement, and the
//! error answers its kind can give (401 and 500/503 always; 403 for admin-only operations;
//! 404 with a path id; 400, 413, 415 and 422 with a body; 400 and 422 with query parameters),
//! and a discriminator on every `oneOf` whose alternatives are tagged as serde tags them (`check`
//! by `type`, `auth` by `kind`). Every request and answer has a real schema: the types the
//! handlers serialize derive theirs where they are serialized whole, and [`super::schema`]
//! mirrors the rest; `tests/it/openapi.rs` lists the few free-form values left and why.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AdditionalProperties, Discriminator, Schema};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{Modify, OpenApi as _};

use super::schema::ErrorBody;

/// The document's fixed parts; the paths come from the routers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Crosscheck",
        description = "Multi-region uptime and TLS monitoring. Every route but this description \
            takes a bearer token (`Authorization: Bearer cc_…`); writes take an `admin` one. \
            Errors are `{\"error\": {\"code\", \"message\", \"fields\"}}`; a 422 names each bad \
            field. Another tenant's resource is a 404.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
    tags(
        (name = "domains", description = "Monitored domains and their checks"),
        (name = "history", description = "Uptime, latency, results and certificates"),
        (name = "incidents", description = "Incidents, acknowledgements, updates and status"),
        (name = "channels", description = "Notification channels and the outbox"),
        (name = "status pages", description = "Public status pages"),
        (name = "maintenance", description = "Maintenance windows"),
        (name = "reports", description = "Flap digests, DNS drift and SLOs"),
        (name = "tenant", description = "Tokens, regions and the tenant"),
        (name = "meta", description = "This description"),
    )
)]
pub struct ApiDoc;

/// The security scheme and the shared error answers.
struct Common;

/// The shared error answers: (name, status, description).
const ERRORS: [(&str, &str, &str); 11] = [
    ("BadRequest", "400", "The body is not a JSON object, or the query string cannot be read"),
    ("Unauthorized", "401", "No valid bearer token"),
    ("Forbidden", "403", "The token is read-only; this operation takes an admin token"),
    ("NotFound", "404", "No such resource for this tenant (an id that is not a UUID included)"),
    ("Conflict", "409", "The resource's state or a unique value forbids it"),
    ("PayloadTooLarge", "413", "The body is larger than the deployment's max_body_bytes"),
    ("UnsupportedMediaType", "415", "The body is not application/json"),
    ("ValidationFailed", "422", "Bad fields or query parameters, each named in `fields`"),
    (
        "RateLimited",
        "429",
        "Too many failed authentications from this address or token prefix (`auth_throttled`), \
         over the tenant's request rate (`rate_limited`), or another limit; retry after \
         `Retry-After` seconds",
    ),
    ("Internal", "500", "An internal error (logged; no detail is given)"),
    ("Unavailable", "503", "A dependency (the database, Redis) is unavailable for now"),
];

impl Modify for Common {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`cc_…`), created by `control-plane token` or `POST /v1/tokens`",
                    ))
                    .build(),
            ),
        );
        for (name, _, description) in ERRORS {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            components.responses.insert(
                name.to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content("application/json", content)
                        .build(),
                ),
            );
        }
    }
}

/// The whole description: the routes of `/v1`, each finished.
pub fn description() -> OpenApi {
    let mut doc = utoipa_axum::router::OpenApiRouter::<super::AppState>::with_openapi(ApiDoc::openapi())
        .nest("/v1", super::v1())
        .into_openapi();
    finish(&mut doc);
    discriminate(&mut doc);
    close_flattened(&mut doc);
    doc
}

/// Writes out each component that flattens a closed object (`additionalProperties: false`)
/// into one closed object with the extra properties: as an `allOf`, the closed part would
/// refuse the extra fields (`POST /v1/checks/test`'s definition: a domain and `wait_ms`).
fn close_flattened(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else { return };
    let closed = |name: &str| match components.schemas.get(name) {
        Some(RefOr::T(Schema::Object(object)))
            if matches!(
                object.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            ) =>
        {
            Some(object.clone())
        }
        _ => None,
    };
    let mut merged = Vec::new();
    for (name, schema) in &components.schemas {
        let RefOr::T(Schema::AllOf(all)) = schema else { continue };
        let mut base = None;
        let mut extra = Vec::new();
        for item in &all.items {
            match item {
                RefOr::Ref(r) => base = r.ref_location.rsplit('/').next().and_then(&closed),
                RefOr::T(Schema::Object(object)) => extra.push(object.clone()),
                _ => {}
            }
        }
        let Some(mut object) = base else { continue };
        if extra.len() + 1 != all.items.len() {
            continue;
        }
        for part in extra {
            object.properties.extend(part.properties);
            object.required.extend(part.required);
        }
        object.description = all.description.clone().or(object.description);
        object.example = None;
        merged.push((name.clone(), object));
    }
    for (name, object) in merged {
        components.schemas.insert(name, RefOr::T(Schema::Object(object)));
    }
}

/// The properties serde tags this API's enums with.
const TAGS: [&str; 2] = ["type", "kind"];

/// Names the tag of every component `oneOf` whose alternatives each fix one value of the same
/// tag property (utoipa writes serde's internally tagged enums so, without the discriminator).
fn discriminate(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else { return };
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::OneOf(one_of)) = schema else { continue };
        let tag = TAGS
            .into_iter()
            .find(|tag| !one_of.items.is_empty() && one_of.items.iter().all(|item| fixes(item, tag)));
        if let Some(tag) = tag {
            one_of.discriminator = Some(Discriminator::new(tag));
        }
    }
}

/// Whether `schema` is an object whose `tag` property has exactly one allowed value.
fn fixes(schema: &RefOr<Schema>, tag: &str) -> bool {
    match schema {
        RefOr::T(Schema::Object(object)) => {
            object.required.iter().any(|r| r == tag)
                && matches!(
                    object.properties.get(tag),
                    Some(RefOr::T(Schema::Object(property)))
                        if property.enum_values.as_ref().is_some_and(|values| values.len() == 1)
                )
        }
        RefOr::T(Schema::AllOf(all)) => all.items.iter().any(|item| fixes(item, tag)),
        _ => false,
    }
}

/// Where the description is served (no token needed).
pub const PATH: &str = "/v1/openapi.json";

/// [`description`] as JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| description().to_pretty_json().expect("the OpenAPI description serializes"))
}

/// Adds the shared parts to every operation but this description's own.
fn finish(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if path == PATH {
            continue;
        }
        let has_id = path.contains('{');
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            finish_operation(operation, has_id);
        }
    }
}

fn finish_operation(operation: &mut Operation, has_id: bool) {
    let requirements = operation.security.get_or_insert_with(Vec::new);
    if requirements.is_empty() {
        requirements.push(SecurityRequirement::new("bearer", Vec::<String>::new()));
    }
    let admin = serde_json::to_value(&*requirements).is_ok_and(|v| v.to_string().contains("\"admin\""));
    let has_query =
        operation.parameters.iter().flatten().any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let has_body = operation.request_body.is_some();
    // Every authenticated operation may be throttled (failed authentications, the tenant's
    // request rate).
    let mut wanted = vec!["Unauthorized", "RateLimited", "Internal", "Unavailable"];
    if admin {
        wanted.push("Forbidden");
    }
    if has_id {
        wanted.push("NotFound");
    }
    if has_body {
        wanted.extend(["BadRequest", "PayloadTooLarge", "UnsupportedMediaType", "ValidationFailed"]);
    }
    if has_query {
        wanted.extend(["BadRequest", "ValidationFailed"]);
    }
    for name in wanted {
        let status = ERRORS.iter().find(|(n, _, _)| *n == name).map(|(_, s, _)| *s).unwrap_or("default");
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
}

/// `GET /v1/openapi.json`: this description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object))
)]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document()).into_response()
}
