//! What a request addresses and how it writes: the types the verbs ([`crate::ops`]),
//! admission, deletion and watches share. They live apart from the verbs so that the modules
//! the verbs call do not depend back on them.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::fields::Scope;
use crate::resources::{ResourceInfo, ResourceKey};

/// What a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub res: Arc<ResourceInfo>,
    /// The version in the URL.
    pub version: String,
    /// The namespace in the URL (empty for cluster-scoped or all namespaces).
    pub namespace: String,
    /// The name in the URL (empty for a collection).
    pub name: String,
    /// Whether the URL ends in `/status`.
    pub status: bool,
}

impl Target {
    /// The store key of the resource.
    pub fn key(&self) -> ResourceKey {
        crate::events::storage_key(&self.res)
    }

    /// Which part of the object a write through this target owns.
    pub fn scope(&self) -> Scope {
        if self.status {
            Scope::Status
        } else {
            Scope::Main {
                status_subresource: self.res.status_subresource,
            }
        }
    }

    /// `group/version` of the request.
    pub fn api_version(&self) -> String {
        self.res.api_version(&self.version)
    }
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager`, or the client's User-Agent product when absent.
    pub field_manager: String,
    /// Whether `fieldManager` was given (apply requires it).
    pub explicit_manager: bool,
    /// `dryRun=All`: compute, validate, do not store.
    pub dry_run: bool,
    /// `force=true` for apply.
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields are an error.
    pub strict_fields: bool,
}

/// The object as seen through `version` (apiVersion and kind set).
pub fn present(res: &ResourceInfo, version: &str, object: &Value) -> Value {
    let mut o = crate::events::outbound(res, object);
    o["apiVersion"] = json!(res.api_version(version));
    o["kind"] = json!(res.kind);
    o
}
