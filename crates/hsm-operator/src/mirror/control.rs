//! The mirror as the REST API drives it: `POST /api/v1/hsm/mirror/sync` runs a pass through
//! [`MirrorControl`], on whichever replica received it (a pass is idempotent, so one running
//! beside the leader's makes the same writes).

use super::{ActionResult, Mirror, Summary};
use crate::api::{MirrorControl, MirrorSummary};
use async_trait::async_trait;

#[async_trait]
impl MirrorControl for Mirror {
    async fn sync_now(&self, force: bool) -> Result<MirrorSummary, String> {
        Mirror::sync_now(self, force)
            .await
            .map(|summary| api_summary(&summary))
            .map_err(|error| error.to_string())
    }
}

/// The API's account of a pass: counts, and one line per failed write naming the secret,
/// the device and the error category (never a value).
pub fn api_summary(summary: &Summary) -> MirrorSummary {
    MirrorSummary {
        secrets_examined: summary.secrets_in_sync + summary.secrets_planned,
        copies_written: summary.written,
        devices_skipped: summary.skipped_devices.len(),
        failures: summary
            .actions
            .iter()
            .filter(|a| a.result == ActionResult::Failed)
            .map(|a| {
                format!(
                    "{} on {}: {}",
                    a.secret,
                    a.device,
                    a.category.as_deref().unwrap_or("failed")
                )
            })
            .collect(),
    }
}
