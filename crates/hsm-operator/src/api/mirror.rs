//! The REST API's handle on mirroring: `POST /api/v1/hsm/mirror/sync` runs a pass now
//! through this port. Mirroring lives in its own module; whatever runs it implements
//! [`MirrorControl`] and is handed to the API state. Without one, the route answers 503
//! `mirror_unavailable`, as the Go manager did before its mirror registered.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What one mirror pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MirrorSummary {
    /// Secrets compared across devices.
    pub secrets_examined: usize,
    /// Copies (secrets or tombstones) written to devices that lacked the winning one.
    pub copies_written: usize,
    /// Devices left out because they were unavailable.
    pub devices_skipped: usize,
    /// One line per copy that could not be written (never a value).
    pub failures: Vec<String>,
}

/// Runs a mirror pass on demand.
#[async_trait]
pub trait MirrorControl: Send + Sync {
    /// Brings every device to the resolved content now; with `force`, rewrites copies even
    /// where the indexes agree. Returns what was done, or why the pass could not run.
    async fn sync_now(&self, force: bool) -> Result<MirrorSummary, String>;
}
