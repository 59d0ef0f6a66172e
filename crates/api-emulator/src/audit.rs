//! The audit log: one entry per request — who, what, the authorisation decision and the
//! response code — kept in memory for tests ([`crate::Emulator::audit_log`]) and, when
//! asked, appended to a file as JSON lines (`serve --audit-log`).

use std::io::Write as _;

use serde::Serialize;

use crate::rbac::Attributes;

/// One request as the audit log records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// The authenticated user (empty when authentication failed).
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The verb (`get`, `list`, `watch`, `create`, …).
    pub verb: String,
    /// API group of the resource (empty: core).
    pub api_group: String,
    /// Resource, empty for non-resource paths.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Namespace, if any.
    pub namespace: String,
    /// Object name, if any.
    pub name: String,
    /// The URL path.
    pub path: String,
    /// Whether authorisation allowed it.
    pub allowed: bool,
    /// The HTTP status code answered.
    pub code: u16,
}

impl AuditEntry {
    /// The entry of a request with these attributes.
    pub fn new(a: &Attributes, allowed: bool, code: u16) -> Self {
        let r = a.resource.clone().unwrap_or_default();
        AuditEntry {
            user: a.user.username.clone(),
            groups: a.user.groups.clone(),
            verb: a.verb.clone(),
            api_group: r.group,
            resource: r.resource,
            subresource: r.subresource,
            namespace: r.namespace,
            name: r.name,
            path: a.path.clone(),
            allowed,
            code,
        }
    }
}

/// Where entries go.
#[derive(Default)]
pub struct AuditLog {
    /// Kept entries (when enabled).
    pub entries: Vec<AuditEntry>,
    /// Whether entries are kept in memory.
    pub enabled: bool,
    /// A file entries are appended to as JSON lines.
    pub file: Option<std::fs::File>,
}

impl AuditLog {
    /// Records one entry.
    pub fn record(&mut self, entry: AuditEntry) {
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(&entry).unwrap_or_default();
            if let Err(e) = writeln!(f, "{line}") {
                tracing::warn!("writing the audit log: {e}");
            }
        }
        if self.enabled {
            self.entries.push(entry);
        }
    }
}
