//! The OpenAPI 3.1 document of the REST API, served at `/api/v1/openapi.json`: the schemas
//! come from the request and answer types themselves (utoipa `ToSchema`), and the operations
//! from [`ROUTES`], the one table that also lists what each route needs in RBAC terms. A
//! test sends a request to every entry and checks that the router serves it.

use super::body::{MetadataBody, MirrorBody, PinChangeBody, TokenBody, WriteBody};
use super::envelope::{Envelope, ErrorBody};
use super::mirror::MirrorSummary;
use super::types::*;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, Paths,
    Ref, Required,
};

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// `GET`, `POST`, `PUT`, `DELETE`.
    pub method: &'static str,
    /// The path, with `{path}` and `{key}` parameters.
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// The RBAC access it needs (see [`super::auth::Access`]), `None` when open.
    pub access: Option<&'static str>,
    /// The request body's schema.
    pub request: Option<&'static str>,
    /// The schema of the answer's `data` (the token exchange answers without envelope).
    pub answer: &'static str,
    /// Statuses it answers with, besides the auth ones.
    pub statuses: &'static [u16],
    /// A concrete URL of it, for the test that every entry is served.
    pub example: &'static str,
}

/// A table row; the arguments are the fields, in order.
#[allow(clippy::too_many_arguments)]
const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Option<&'static str>,
    request: Option<&'static str>,
    answer: &'static str,
    statuses: &'static [u16],
    example: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        access,
        request,
        answer,
        statuses,
        example,
    }
}

const SECRET_READ: &[u16] = &[200, 400, 404, 503];
const SECRET_WRITE: &[u16] = &[201, 206, 400, 500, 503];
const SECRET_DELETE: &[u16] = &[200, 206, 400, 404, 500, 503];

/// Every route of the API.
pub const ROUTES: &[RouteDoc] = &[
    route(
        "GET",
        "/api/v1/health",
        "Health of the API and the devices' agents",
        None,
        None,
        "HealthData",
        &[200],
        "/api/v1/health",
    ),
    route(
        "POST",
        "/api/v1/auth/token",
        "Exchange a ServiceAccount token for an API token (answer not enveloped)",
        None,
        Some("TokenBody"),
        "TokenAnswer",
        &[200, 400, 401],
        "/api/v1/auth/token",
    ),
    route(
        "GET",
        "/api/v1/openapi.json",
        "This document",
        None,
        None,
        "Envelope",
        &[200],
        "/api/v1/openapi.json",
    ),
    route(
        "GET",
        "/api/v1/info",
        "What this API is",
        Some("get hsmdevices"),
        None,
        "ApiInfo",
        &[200],
        "/api/v1/info",
    ),
    route(
        "GET",
        "/api/v1/hsm/info",
        "Each device's token identity",
        Some("get hsmdevices"),
        None,
        "InfoData",
        &[200, 500, 503],
        "/api/v1/hsm/info",
    ),
    route(
        "GET",
        "/api/v1/hsm/status",
        "Each device's agent health",
        Some("get hsmdevices"),
        None,
        "StatusData",
        &[200, 503],
        "/api/v1/hsm/status",
    ),
    route(
        "GET",
        "/api/v1/hsm/secrets",
        "Live secrets on any device (?prefix=)",
        Some("list hsmsecrets"),
        None,
        "ListData",
        &[200, 503],
        "/api/v1/hsm/secrets?prefix=a",
    ),
    route(
        "GET",
        "/api/v1/hsm/secrets/{path}",
        "A secret's values (base64), resolved across devices; {path} may hold '/'",
        Some("get hsmsecrets {path}"),
        None,
        "ReadData",
        SECRET_READ,
        "/api/v1/hsm/secrets/team/db",
    ),
    route(
        "POST",
        "/api/v1/hsm/secrets/{path}",
        "Write a secret (plain-string values) to every device",
        Some("create hsmsecrets {path}, or update when it exists"),
        Some("WriteBody"),
        "WriteData",
        SECRET_WRITE,
        "/api/v1/hsm/secrets/team/db",
    ),
    route(
        "PUT",
        "/api/v1/hsm/secrets/{path}",
        "Same as POST",
        Some("create hsmsecrets {path}, or update when it exists"),
        Some("WriteBody"),
        "WriteData",
        SECRET_WRITE,
        "/api/v1/hsm/secrets/team/db",
    ),
    route(
        "DELETE",
        "/api/v1/hsm/secrets/{path}",
        "Delete a secret (a tombstone on every device); with '/' in {path}, send it as %2F or use {path}/-",
        Some("delete hsmsecrets {path}"),
        None,
        "DeleteData",
        SECRET_DELETE,
        "/api/v1/hsm/secrets/db",
    ),
    route(
        "GET",
        "/api/v1/hsm/secrets/{path}/metadata",
        "A secret's metadata (a tombstone's when deleted)",
        Some("get hsmsecrets {path}"),
        None,
        "MetadataData",
        SECRET_READ,
        "/api/v1/hsm/secrets/team/db/metadata",
    ),
    route(
        "GET",
        "/api/v1/hsm/secrets/{path}/checksum",
        "A secret's checksum",
        Some("get hsmsecrets {path}"),
        None,
        "ChecksumData",
        SECRET_READ,
        "/api/v1/hsm/secrets/team/db/checksum",
    ),
    route(
        "DELETE",
        "/api/v1/hsm/secrets/{path}/{key}",
        "Delete one key ({path} is everything before the last segment)",
        Some("update hsmsecrets {path}"),
        None,
        "DeleteKeyData",
        SECRET_DELETE,
        "/api/v1/hsm/secrets/db/password",
    ),
    route(
        "GET",
        "/api/v1/hsm/secrets/{path}/-",
        "Explicit form: the secret, whatever its last segment",
        Some("get hsmsecrets {path}"),
        None,
        "ReadData",
        SECRET_READ,
        "/api/v1/hsm/secrets/team/metadata/-",
    ),
    route(
        "POST",
        "/api/v1/hsm/secrets/{path}/-",
        "Explicit form of POST",
        Some("create hsmsecrets {path}, or update when it exists"),
        Some("WriteBody"),
        "WriteData",
        SECRET_WRITE,
        "/api/v1/hsm/secrets/team/metadata/-",
    ),
    route(
        "PUT",
        "/api/v1/hsm/secrets/{path}/-",
        "Explicit form of PUT",
        Some("create hsmsecrets {path}, or update when it exists"),
        Some("WriteBody"),
        "WriteData",
        SECRET_WRITE,
        "/api/v1/hsm/secrets/team/metadata/-",
    ),
    route(
        "DELETE",
        "/api/v1/hsm/secrets/{path}/-",
        "Explicit form: delete the secret",
        Some("delete hsmsecrets {path}"),
        None,
        "DeleteData",
        SECRET_DELETE,
        "/api/v1/hsm/secrets/team/db/-",
    ),
    route(
        "GET",
        "/api/v1/hsm/secrets/{path}/-/metadata",
        "Explicit form of /metadata",
        Some("get hsmsecrets {path}"),
        None,
        "MetadataData",
        SECRET_READ,
        "/api/v1/hsm/secrets/team/metadata/-/metadata",
    ),
    route(
        "GET",
        "/api/v1/hsm/secrets/{path}/-/checksum",
        "Explicit form of /checksum",
        Some("get hsmsecrets {path}"),
        None,
        "ChecksumData",
        SECRET_READ,
        "/api/v1/hsm/secrets/team/db/-/checksum",
    ),
    route(
        "DELETE",
        "/api/v1/hsm/secrets/{path}/-/keys/{key}",
        "Explicit form: delete one key",
        Some("update hsmsecrets {path}"),
        None,
        "DeleteKeyData",
        SECRET_DELETE,
        "/api/v1/hsm/secrets/team/db/-/keys/password",
    ),
    route(
        "POST",
        "/api/v1/hsm/change-pin",
        "Change the user PIN on every device",
        Some("update hsmdevices/pin"),
        Some("PinChangeBody"),
        "PinData",
        &[200, 206, 400, 500, 503],
        "/api/v1/hsm/change-pin",
    ),
    route(
        "POST",
        "/api/v1/hsm/mirror/sync",
        "Run a mirror pass now (empty body allowed)",
        Some("create hsmsecrets/mirror"),
        Some("MirrorBody"),
        "MirrorData",
        &[200, 400, 500, 503],
        "/api/v1/hsm/mirror/sync",
    ),
];

fn method(name: &str) -> HttpMethod {
    match name {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        other => unreachable!("no route uses {other}"),
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Written to every device",
        206 => "Done on some devices only (data.deviceResults says which)",
        400 => "Bad request: error.details.field names the field",
        401 => "Not authenticated: MISSING_AUTH_HEADER, INVALID_AUTH_FORMAT, INVALID_TOKEN",
        403 => "RBAC does not allow it (SubjectAccessReview)",
        404 => "Not found",
        500 => "Failed on every device",
        503 => "No agent available, or the Kubernetes API could not review the request",
        _ => "See the error code",
    }
}

fn operation(route: &RouteDoc) -> utoipa::openapi::path::Operation {
    let data = Ref::from_schema_name(route.answer);
    let envelope = ObjectBuilder::new()
        .property("success", ObjectBuilder::new().schema_type(Type::Boolean))
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .property("data", data.clone())
        .required("success");
    let success_schema: utoipa::openapi::RefOr<utoipa::openapi::Schema> =
        match route.path == "/api/v1/auth/token" {
            true => data.into(),
            false => envelope.into(),
        };
    let description = match route.access {
        Some(access) => format!("RBAC: `{access}` (group hsm.j5t.io, the manager's namespace)."),
        None => "Open: no authentication.".to_owned(),
    };
    let mut op = OperationBuilder::new()
        .summary(Some(route.summary))
        .description(Some(description))
        .operation_id(Some(format!("{} {}", route.method, route.path)));
    for param in ["path", "key"] {
        if route.path.contains(&format!("{{{param}}}")) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(param)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
    }
    if route.path == "/api/v1/hsm/secrets" {
        op = op.parameter(
            ParameterBuilder::new()
                .name("prefix")
                .parameter_in(ParameterIn::Query)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    if let Some(request) = route.request {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(request)))
                        .build(),
                )
                .build(),
        ));
    }
    let error = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Envelope")))
        .build();
    let mut statuses: Vec<u16> = route.statuses.to_vec();
    if route.access.is_some() {
        statuses.extend([401, 403]);
    }
    for status in statuses {
        let content = match status {
            200 | 201 | 206 => ContentBuilder::new()
                .schema(Some(success_schema.clone()))
                .build(),
            _ => error.clone(),
        };
        op = op.response(
            status.to_string(),
            ResponseBuilder::new()
                .description(status_text(status))
                .content("application/json", content),
        );
    }
    if route.access.is_some() {
        op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    }
    op.build()
}

/// The document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for route in ROUTES {
        paths.add_path_operation(route.path, vec![method(route.method)], operation(route));
    }
    let components = ComponentsBuilder::new()
        .schema_from::<Envelope>()
        .schema_from::<ErrorBody>()
        .schema_from::<ApiInfo>()
        .schema_from::<HealthData>()
        .schema_from::<StatusData>()
        .schema_from::<DeviceInfo>()
        .schema_from::<InfoData>()
        .schema_from::<ListData>()
        .schema_from::<ReadData>()
        .schema_from::<MetadataView>()
        .schema_from::<MetadataData>()
        .schema_from::<ChecksumData>()
        .schema_from::<DeviceResult>()
        .schema_from::<WriteData>()
        .schema_from::<DeleteData>()
        .schema_from::<DeleteKeyData>()
        .schema_from::<PinData>()
        .schema_from::<MirrorData>()
        .schema_from::<MirrorSummary>()
        .schema_from::<TokenAnswer>()
        .schema_from::<WriteBody>()
        .schema_from::<MetadataBody>()
        .schema_from::<PinChangeBody>()
        .schema_from::<MirrorBody>()
        .schema_from::<TokenBody>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A Kubernetes token (checked with TokenReview) or a token from \
                         POST /api/v1/auth/token",
                    ))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("hsm-secrets-operator REST API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Reads and writes the secrets the HSMs hold. Every answer but the token \
                     exchange is an envelope {success, message, data} or {success: false, \
                     error: {code, message, details}}.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}
