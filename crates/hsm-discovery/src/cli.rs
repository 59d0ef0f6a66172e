//! The command line: the Go operator's discovery mode (`--mode=discovery`, `--sync-interval`,
//! `--log-level`, environment `NODE_NAME`, `POD_NAMESPACE`, `POD_NAME`), so the DaemonSet the
//! manager generates starts it unchanged, plus flags for running outside a cluster.

use crate::plugin::{KUBELET_SOCKETS, PluginConfig};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Finds USB HSMs on this node, reports them on the pod and serves the kubelet device plugin.
#[derive(Debug, Clone, Parser)]
#[command(name = "hsm-discovery", version)]
pub struct DiscoveryArgs {
    /// Must be `discovery` (the Go operator's single binary chose its role with this flag).
    #[arg(long, default_value = "discovery", value_parser = ["discovery"])]
    pub mode: String,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Full re-scan interval (a Go duration: `30s`, `1m`).
    #[arg(long, default_value = "30s", value_parser = go_duration)]
    pub sync_interval: Duration,
    /// How long a lost device stays in reports (marked unavailable) before it is removed.
    #[arg(long, default_value = "5m", value_parser = go_duration)]
    pub grace_period: Duration,
    /// The node (downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The pod's namespace; else the service account's namespace file.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The pod's name; else the hostname.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// How often an unchanged report is written again (a Go duration), so the manager sees
    /// this pod is alive; keep it well inside the pools' grace period (5m).
    #[arg(long, default_value = "1m", value_parser = go_duration)]
    pub report_refresh: Duration,
    /// The sysfs tree to read; default `/host/sys` when mounted there, else `/sys`.
    #[arg(long, env = hsm_api::names::env::SYSFS_ROOT)]
    pub sysfs_root: Option<PathBuf>,
    /// Do not listen for kernel uevents (periodic scans only).
    #[arg(long)]
    pub no_uevents: bool,
    /// Do not serve the kubelet device plugin.
    #[arg(long)]
    pub no_device_plugin: bool,
    /// The kubelet's device-plugins directory.
    #[arg(long, env = hsm_api::names::env::DEVICE_PLUGIN_DIR, default_value = hsm_proto::deviceplugin::v1beta1::DEVICE_PLUGIN_PATH)]
    pub device_plugin_dir: PathBuf,
    /// Kubelet registration sockets, tried in order (repeatable, or comma-separated in the
    /// environment); default the Go list.
    #[arg(long, env = hsm_api::names::env::KUBELET_SOCKETS, value_delimiter = ',')]
    pub kubelet_socket: Vec<PathBuf>,
}

impl DiscoveryArgs {
    /// The device-plugin settings, unless turned off.
    pub fn plugin_config(&self) -> Option<PluginConfig> {
        if self.no_device_plugin {
            return None;
        }
        let kubelet_sockets = if self.kubelet_socket.is_empty() {
            KUBELET_SOCKETS.iter().map(PathBuf::from).collect()
        } else {
            self.kubelet_socket.clone()
        };
        Some(PluginConfig {
            dir: self.device_plugin_dir.clone(),
            kubelet_sockets,
            ..PluginConfig::default()
        })
    }
}

/// Parses a Go duration: a sequence of decimal numbers with units `h`, `m`, `s`, `ms`
/// (`1m30s`, `500ms`); a bare number is seconds.
pub fn go_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration like 30s, 5m or 1m30s");
    if let Ok(seconds) = value.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        total = total
            .checked_add(
                unit.checked_mul(u32::try_from(number).map_err(|_| bad())?)
                    .ok_or_else(bad)?,
            )
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonsets_arguments_parse() {
        let args = DiscoveryArgs::try_parse_from([
            "hsm-discovery",
            "--mode=discovery",
            "--node-name=worker-1",
        ])
        .unwrap();
        assert_eq!(args.sync_interval, Duration::from_secs(30));
        assert_eq!(args.grace_period, Duration::from_secs(300));
        let plugins = args.plugin_config().unwrap();
        assert_eq!(plugins.kubelet_sockets.len(), 3);
        assert!(
            DiscoveryArgs::try_parse_from(["hsm-discovery", "--mode=agent", "--node-name=n"])
                .is_err()
        );
        assert!(
            DiscoveryArgs::try_parse_from(["hsm-discovery", "--node-name=n", "--bogus"]).is_err()
        );
    }

    #[test]
    fn paths_and_refresh_can_be_given() {
        let args = DiscoveryArgs::try_parse_from([
            "hsm-discovery",
            "--node-name=n",
            "--sysfs-root=/fixture/sys",
            "--kubelet-socket=/a/kubelet.sock,/b/kubelet.sock",
            "--report-refresh=20s",
        ])
        .unwrap();
        assert_eq!(args.sysfs_root, Some(PathBuf::from("/fixture/sys")));
        assert_eq!(args.report_refresh, Duration::from_secs(20));
        let plugins = args.plugin_config().unwrap();
        assert_eq!(
            plugins.kubelet_sockets,
            [
                PathBuf::from("/a/kubelet.sock"),
                PathBuf::from("/b/kubelet.sock")
            ]
        );
        let defaults = DiscoveryArgs::try_parse_from(["hsm-discovery", "--node-name=n"]).unwrap();
        assert_eq!(defaults.report_refresh, Duration::from_secs(60));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(go_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(go_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "s", "1x", "0s", "-1s", "99999999999h"] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }
}
