//! HTTP routing: URL and method to a verb on a resource, query parameters to options, and
//! the `tower::Service` that `kube::Client` and the HTTP server both call.

use std::collections::HashMap;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::audit::AuditEntry;
use crate::authn::UserInfo;
use crate::error::ApiError;
use crate::gc::{DeleteOptions, Propagation};
use crate::ops;
use crate::paging::Page;
use crate::patch::PatchType;
use crate::pods::PodRuntimeError;
use crate::request::{Target, WriteOptions};
use crate::selector::{FieldSelector, LabelSelector};
use crate::table::Form;
use crate::watch::{self, WatchParams};
use crate::{Authorization, Emulator, attributes, discovery, openapi, protobuf, rbac};

/// The body of every response: a whole JSON document or a stream of watch events.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

type Query = HashMap<String, String>;

impl<B> tower::Service<Request<B>> for Emulator
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let emu = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let limit = emu.inner.max_body_bytes;
            let bytes = match http_body_util::Limited::new(body, limit).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(error(&ApiError::TooLarge(limit)));
                }
                Err(e) => return Ok(error(&ApiError::BadRequest(format!("reading body: {e}")))),
            };
            Ok(emu.handle(Request::from_parts(parts, bytes)))
        })
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response<ResponseBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("valid response")
}

fn error(e: &ApiError) -> Response<ResponseBody> {
    json_response(
        StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

fn not_found_path() -> ApiError {
    ApiError::NotFound {
        message: "the server could not find the requested resource".into(),
        details: json!({}),
    }
}

impl Emulator {
    /// Answers one request whose body has been read.
    pub fn handle(&self, req: Request<Bytes>) -> Response<ResponseBody> {
        // A bug must not take the client down with it (an in-process kube::Client shares
        // one worker for all requests): it is answered as a 500.
        let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.gated(&req)));
        match routed {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => error(&e),
            Err(_) => error(&ApiError::Internal(format!(
                "the emulator failed on {} {}",
                req.method(),
                req.uri()
            ))),
        }
    }

    /// Authentication, the body limit and authorisation in front of routing, each request
    /// recorded in the audit log.
    fn gated(&self, req: &Request<Bytes>) -> Result<Response<ResponseBody>, ApiError> {
        let query: Query = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let credentials = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|h| h.to_str().unwrap_or_default());
        let rbac_on = *self.inner.authorization.read() == Authorization::Rbac;
        // Authentication under the store's lock; authorisation outside it, on a snapshot of
        // the RBAC objects, so that decisions do not lengthen the lock's hold.
        let (authenticated, snapshot) = {
            let store = self.inner.store.lock();
            let snapshot = self.rbac_snapshot(&store);
            let authenticated = self
                .inner
                .auth
                .read()
                .authenticate_header(&store, credentials);
            (authenticated, snapshot)
        };
        let authenticated = authenticated
            .map_err(|_| ApiError::Unauthorized)
            .and_then(|user| {
                crate::impersonation::resolve(&snapshot, user, req.headers(), rbac_on)
            });
        let (user, refused) = match authenticated {
            Ok(user) => (user, None),
            Err(e) => (
                UserInfo {
                    username: String::new(),
                    uid: String::new(),
                    groups: vec![],
                },
                Some(e),
            ),
        };
        let attrs = attributes::of_request(req.method(), req.uri().path(), &query, user);
        let allowed = refused.is_none() && (!rbac_on || rbac::allows(&snapshot, &attrs));
        let result = if let Some(e) = refused {
            Err(e)
        } else if !allowed {
            Err(denied(&attrs))
        } else if req.body().len() > self.inner.max_body_bytes {
            Err(ApiError::TooLarge(self.inner.max_body_bytes))
        } else {
            self.route(req, &query, &attrs.user)
        };
        let code = match &result {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.code(),
        };
        self.inner
            .audit
            .lock()
            .record(AuditEntry::new(&attrs, allowed, code));
        result
    }

    fn route(
        &self,
        req: &Request<Bytes>,
        query: &Query,
        user: &UserInfo,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1")
            .to_string();
        let store = || self.inner.store.lock();
        match segs.as_slice() {
            [] => ok(json!({"paths": ["/api", "/api/v1", "/apis", "/version", "/healthz"]})),
            ["version"] => ok(discovery::version()),
            ["healthz" | "livez" | "readyz"] => Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::from_static(b"ok")).boxed_unsync())
                .expect("valid response")),
            ["api"] => ok(discovery::api_versions(&host)),
            ["apis"] => ok(discovery::api_group_list(&store().registry)),
            ["api", "v1"] => {
                ok(discovery::resource_list(&store().registry, "", "v1")
                    .ok_or_else(not_found_path)?)
            }
            ["apis", g] => {
                ok(discovery::api_group(&store().registry, g).ok_or_else(not_found_path)?)
            }
            ["apis", g, v] => {
                ok(discovery::resource_list(&store().registry, g, v).ok_or_else(not_found_path)?)
            }
            ["openapi", "v3"] => ok(openapi::index(&store().registry)),
            ["openapi", "v3", "api", v] => {
                ok(openapi::document(&store().registry, "", v).ok_or_else(not_found_path)?)
            }
            ["openapi", "v3", "apis", g, v] => {
                ok(openapi::document(&store().registry, g, v).ok_or_else(not_found_path)?)
            }
            ["api", "v1", rest @ ..] => self.resource_request(req, "", "v1", rest, query, user),
            ["apis", g, v, rest @ ..] => self.resource_request(req, g, v, rest, query, user),
            _ => Err(not_found_path()),
        }
    }

    /// The target and subresource of the path after `/api/v1` or `/apis/<group>/<version>`.
    fn resolve(
        &self,
        group: &str,
        version: &str,
        rest: &[&str],
    ) -> Result<(Target, Sub), ApiError> {
        let (namespace, resource, tail) = match rest {
            ["namespaces", ns, res, tail @ ..] if !matches!(*res, "status" | "finalize") => {
                (*ns, *res, tail)
            }
            [res, tail @ ..] => ("", *res, tail),
            [] => return Err(not_found_path()),
        };
        let res = self
            .inner
            .store
            .lock()
            .registry
            .lookup(group, version, resource)
            .ok_or_else(not_found_path)?;
        if (res.namespaced && namespace.is_empty() && !tail.is_empty())
            || (!res.namespaced && !namespace.is_empty())
        {
            return Err(not_found_path());
        }
        let core = |plural: &str| res.builtin && res.group.is_empty() && res.plural == plural;
        let (name, sub) = match tail {
            [] => ("", Sub::None),
            [name] => (*name, Sub::None),
            [name, "status"] if res.status_subresource => (*name, Sub::Status),
            [name, "scale"] if res.scale.is_some() => (*name, Sub::Scale),
            [name, "token"] if core("serviceaccounts") => (*name, Sub::Token),
            [name, "log"] if core("pods") => (*name, Sub::Log),
            [name, "portforward"] if core("pods") => (*name, Sub::PortForward),
            _ => return Err(not_found_path()),
        };
        let t = Target {
            res: res.clone(),
            version: version.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            status: sub == Sub::Status,
        };
        Ok((t, sub))
    }

    /// GET on a collection: a list (in pages), or a watch with `watch=true`.
    fn list_or_watch(
        &self,
        t: &Target,
        query: &Query,
        form: Form,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let flag = |k: &str| matches!(query.get(k).map(String::as_str), Some("true" | "1"));
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", |s| s))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", |s| s), &t.res)?;
        if flag("watch") {
            let params = WatchParams {
                resource_version: query.get("resourceVersion").cloned(),
                bookmarks: flag("allowWatchBookmarks"),
                timeout: query
                    .get("timeoutSeconds")
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_secs),
                send_initial_events: flag("sendInitialEvents"),
                labels,
                fields,
            };
            return self.watch(t, params, form);
        }
        let page = Page {
            limit: query.get("limit").and_then(|l| l.parse().ok()),
            continue_token: query.get("continue").cloned(),
        };
        let list = ops::list(&self.inner.store.lock(), t, &labels, &fields, &page)?;
        Ok(json_response(StatusCode::OK, &form.list(&t.res, list)))
    }

    fn resource_request(
        &self,
        req: &Request<Bytes>,
        group: &str,
        version: &str,
        rest: &[&str],
        query: &Query,
        user: &UserInfo,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let (t, sub) = self.resolve(group, version, rest)?;
        let (res, namespace, name) = (t.res.clone(), t.namespace.as_str(), t.name.as_str());
        let accept = header_str(req, header::ACCEPT);
        let form = Form::from_accept(&accept);
        let method = req.method().clone();
        if (res.create_only || sub == Sub::Token) && method != Method::POST {
            return Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({})",
                res.plural
            )));
        }
        let write_opts = write_options(req, query);
        match sub {
            Sub::Token => {
                let body = parse_body(req)?;
                let v = self.token_request(namespace, name, body)?;
                return Ok(json_response(StatusCode::CREATED, &v));
            }
            Sub::Log => return self.pod_logs(&t, query),
            Sub::PortForward => return self.port_forward(req, &t, user),
            Sub::None | Sub::Status | Sub::Scale => {}
        }
        if sub == Sub::Scale {
            let ct = header_str(req, header::CONTENT_TYPE);
            let mut store = self.inner.store.lock();
            let v = crate::scale::serve(&mut store, &t, &method, &ct, req.body(), &write_opts)?;
            return Ok(json_response(StatusCode::OK, &v));
        }
        let created = |v: Value| Ok(json_response(StatusCode::CREATED, &v));
        let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
        match (method, name.is_empty()) {
            (Method::GET, true) => self.list_or_watch(&t, query, form),
            (Method::GET, false) => {
                let obj = ops::get(&self.inner.store.lock(), &t)?;
                ok(form.object(&res, obj))
            }
            (Method::POST, true) => {
                let body = parse_body(req)?;
                if res.create_only {
                    return created(self.review(&res, namespace, body, user)?);
                }
                created(ops::create(
                    &mut self.inner.store.lock(),
                    &t,
                    body,
                    &write_opts,
                )?)
            }
            (Method::PUT, false) => {
                let body = parse_body(req)?;
                ok(ops::update(
                    &mut self.inner.store.lock(),
                    &t,
                    body,
                    &write_opts,
                )?)
            }
            (Method::PATCH, false) => {
                let type_ = patch_type(req, &res)?;
                let mut store = self.inner.store.lock();
                let existed = store.get(&t.key(), &t.namespace, &t.name).is_some();
                if !existed && type_ == PatchType::Apply {
                    self.authorize_apply_create(&store, &t, user)?;
                }
                let v = ops::patch(&mut store, &t, type_, req.body(), &write_opts)?;
                if existed { ok(v) } else { created(v) }
            }
            (Method::DELETE, false) => {
                let opts = delete_options(req.body(), query)?;
                ok(crate::gc::delete(&mut self.inner.store.lock(), &t, &opts)?)
            }
            (Method::DELETE, true) => {
                let opts = delete_options(req.body(), query)?;
                let labels = LabelSelector::parse(query.get("labelSelector").map_or("", |s| s))?;
                let fields =
                    FieldSelector::parse(query.get("fieldSelector").map_or("", |s| s), &res)?;
                let mut store = self.inner.store.lock();
                ok(crate::gc::delete_collection(
                    &mut store, &t, &labels, &fields, &opts,
                )?)
            }
            _ => Err(ApiError::MethodNotAllowed(
                "the server does not allow this method on the requested resource".into(),
            )),
        }
    }

    fn watch(
        &self,
        t: &Target,
        params: WatchParams,
        form: Form,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let render = form.render(&t.res);
        let rx = {
            let store = self.inner.store.lock();
            watch::start(&store, t, params, self.inner.bookmark_interval, render)?
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .expect("valid response"))
    }
}

impl Emulator {
    /// `pods/log`: answered by the registered [`crate::PodRuntime`].
    fn pod_logs(&self, t: &Target, query: &Query) -> Result<Response<ResponseBody>, ApiError> {
        ops::get(&self.inner.store.lock(), t)?;
        let Some(rt) = self.inner.pod_runtime.read().clone() else {
            return Err(ApiError::BadRequest(format!(
                "the containers of pod \"{}\" are not running: no pod runtime is registered with the emulator",
                t.name
            )));
        };
        let opts = crate::pods::LogOptions::from_query(query);
        let logs = rt.logs(&t.namespace, &t.name, &opts).map_err(|e| match e {
            PodRuntimeError::NotRunning(why) => ApiError::BadRequest(why),
            PodRuntimeError::Io(e) => ApiError::Internal(format!("reading the logs: {e}")),
        })?;
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(logs)).boxed_unsync())
            .expect("valid response"))
    }
}

/// The patch type of a PATCH's Content-Type, or 415 listing what is served.
fn patch_type(
    req: &Request<Bytes>,
    res: &crate::resources::ResourceInfo,
) -> Result<PatchType, ApiError> {
    let ct = header_str(req, header::CONTENT_TYPE);
    PatchType::from_content_type(&ct).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media \
             types include: application/json-patch+json, \
             application/merge-patch+json, application/apply-patch+yaml{}",
            if res.builtin {
                ", application/strategic-merge-patch+json"
            } else {
                ""
            }
        ))
    })
}

/// The options of a write, from the query.
fn write_options(req: &Request<Bytes>, query: &Query) -> WriteOptions {
    let flag = |k: &str| matches!(query.get(k).map(String::as_str), Some("true" | "1"));
    WriteOptions {
        field_manager: query
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| default_manager(req)),
        explicit_manager: query.contains_key("fieldManager"),
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        force: flag("force"),
        strict_fields: query.get("fieldValidation").is_some_and(|v| v == "Strict"),
    }
}

fn header_str(req: &Request<Bytes>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The real server names an update's manager after the client's User-Agent product.
fn default_manager(req: &Request<Bytes>) -> String {
    let ua = header_str(req, header::USER_AGENT);
    let product = ua.split('/').next().unwrap_or_default().trim();
    if product.is_empty() {
        "unknown".into()
    } else {
        product.to_string()
    }
}

/// The body of a create or update: protobuf (what client-go sends for built-in kinds),
/// JSON or YAML. A body nested deeper than the decoders accept is a 422.
fn parse_body(req: &Request<Bytes>) -> Result<Value, ApiError> {
    if protobuf::is_protobuf(&header_str(req, header::CONTENT_TYPE)) {
        return protobuf::decode(req.body());
    }
    parse_bytes(req.body())
}

fn parse_bytes(body: &Bytes) -> Result<Value, ApiError> {
    // Checked before decoding: the YAML decoder takes quadratic time on deep flow nesting.
    if bracket_depth(body) > MAX_DEPTH {
        return Err(ApiError::too_deep());
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) if e.to_string().contains("recursion limit") => Err(ApiError::too_deep()),
        Err(_) => serde_yaml::from_slice(body).map_err(|e| {
            if e.to_string().contains("recursion limit") {
                ApiError::too_deep()
            } else {
                ApiError::BadRequest(format!("the body could not be decoded: {e}"))
            }
        }),
    }
}

/// The deepest nesting a body may have (serde_json's own limit).
const MAX_DEPTH: usize = 128;

/// The deepest nesting of `[`/`{` in a JSON or flow-YAML text, outside double-quoted
/// strings.
fn bracket_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                max = max.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The authoriser's 403 for `a`.
impl Emulator {
    /// A server-side apply that would create the object needs `create` as well as the
    /// request's `patch`, as the real server checks (its patch handler authorises the
    /// creation it is about to make); a refusal is a 403 on the `patch` request.
    fn authorize_apply_create(
        &self,
        store: &crate::store::Store,
        t: &Target,
        user: &UserInfo,
    ) -> Result<(), ApiError> {
        let attributes = rbac::Attributes {
            user: user.clone(),
            verb: "create".into(),
            resource: Some(rbac::ResourceAttributes {
                namespace: t.namespace.clone(),
                group: t.res.group.clone(),
                resource: t.res.plural.clone(),
                subresource: String::new(),
                name: t.name.clone(),
            }),
            path: String::new(),
        };
        self.authorize_within(&self.rbac_snapshot(store), &attributes)
    }

    /// A second authorisation made while serving an allowed request (the creation an apply
    /// makes, the `create` a WebSocket upgrade needs): enforced only under RBAC, refused
    /// with a 403 naming what is missing.
    pub(crate) fn authorize_within(
        &self,
        snapshot: &rbac::Snapshot,
        attributes: &rbac::Attributes,
    ) -> Result<(), ApiError> {
        if *self.inner.authorization.read() != Authorization::Rbac {
            return Ok(());
        }
        let decision = rbac::authorize(snapshot, attributes);
        if decision.allowed {
            return Ok(());
        }
        let why = if decision.reason.is_empty() {
            rbac::forbidden_message(attributes)
        } else {
            decision.reason
        };
        let r = attributes.resource.clone().unwrap_or_default();
        Err(ApiError::denied(&r.group, &r.resource, &r.name, &why))
    }
}

fn denied(a: &rbac::Attributes) -> ApiError {
    let why = rbac::forbidden_message(a);
    match &a.resource {
        Some(r) => ApiError::denied(&r.group, &r.resource, &r.name, &why),
        None => ApiError::denied("", "", "", &why),
    }
}

/// The subresource a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    None,
    Status,
    Scale,
    Token,
    Log,
    PortForward,
}

fn delete_options(body: &Bytes, query: &Query) -> Result<DeleteOptions, ApiError> {
    let b: Value = if body.is_empty() {
        Value::Null
    } else {
        parse_bytes(body)?
    };
    let policy = query
        .get("propagationPolicy")
        .cloned()
        .or_else(|| b["propagationPolicy"].as_str().map(String::from));
    let mut propagation = policy.as_deref().map(Propagation::parse).transpose()?;
    let orphan = query
        .get("orphanDependents")
        .map(|s| s == "true")
        .or_else(|| b["orphanDependents"].as_bool());
    if propagation.is_none() {
        propagation = orphan.map(|o| {
            if o {
                Propagation::Orphan
            } else {
                Propagation::Background
            }
        });
    }
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All")
        || b["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d == "All"));
    Ok(DeleteOptions {
        propagation,
        uid: b["preconditions"]["uid"].as_str().map(String::from),
        resource_version: b["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from),
        dry_run,
        grace_period: query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| b["gracePeriodSeconds"].as_i64()),
    })
}
