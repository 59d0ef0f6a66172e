//! Pure: a pod's observed state → its `status` (phase, conditions, container statuses), as
//! a merge patch that also clears what no longer holds.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// A container's state.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running: why.
    Waiting {
        /// CamelCase reason.
        reason: String,
        /// Details.
        message: String,
    },
    /// Running since.
    Running {
        /// Start time.
        started: DateTime<Utc>,
    },
    /// Ended.
    Terminated {
        /// Exit code.
        exit_code: i32,
        /// Start time.
        started: DateTime<Utc>,
        /// End time.
        finished: DateTime<Utc>,
    },
}

fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl State {
    fn to_json(&self) -> Value {
        let (waiting, running, terminated) = match self {
            State::Waiting { reason, message } => (
                json!({"reason": reason, "message": message}),
                Value::Null,
                Value::Null,
            ),
            State::Running { started } => {
                (Value::Null, json!({"startedAt": ts(started)}), Value::Null)
            }
            State::Terminated {
                exit_code,
                started,
                finished,
            } => (
                Value::Null,
                Value::Null,
                json!({
                    "exitCode": exit_code,
                    "reason": if *exit_code == 0 { "Completed" } else { "Error" },
                    "startedAt": ts(started), "finishedAt": ts(finished),
                }),
            ),
        };
        json!({"waiting": waiting, "running": running, "terminated": terminated})
    }
}

/// One container as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Image as written.
    pub image: String,
    /// Now.
    pub state: State,
    /// The previous run's end, after a restart.
    pub last: Option<State>,
    /// Whether its readiness probe passes (or it runs and has none).
    pub ready: bool,
    /// Restarts so far.
    pub restarts: i32,
}

impl Container {
    /// A container not started yet.
    pub fn new(name: &str, image: &str) -> Self {
        Container {
            name: name.into(),
            image: image.into(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last: None,
            ready: false,
            restarts: 0,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "image": self.image, "imageID": "",
            "state": self.state.to_json(),
            "lastState": self.last.as_ref().map(State::to_json).unwrap_or_else(|| json!({})),
            "ready": self.ready, "restartCount": self.restarts,
            "started": matches!(self.state, State::Running { .. }),
        })
    }
}

/// A pod as observed by its supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The pod's address.
    pub ip: Option<Ipv4Addr>,
    /// When the runner took it on.
    pub started: DateTime<Utc>,
    /// Whether the init containers are done.
    pub initialized: bool,
    /// Init containers.
    pub init_containers: Vec<Container>,
    /// Containers.
    pub containers: Vec<Container>,
    /// A pod-level failure (e.g. it cannot run here): phase Failed, with reason and message.
    pub failed: Option<(String, String)>,
    /// The pod's restartPolicy.
    pub restart_always: bool,
}

/// The pod's phase.
pub fn phase(o: &Observed) -> &'static str {
    if o.failed.is_some() {
        return "Failed";
    }
    let cs = &o.containers;
    let terminated: Vec<i32> = cs
        .iter()
        .filter_map(|c| match c.state {
            State::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        })
        .collect();
    if !cs.is_empty() && terminated.len() == cs.len() && !o.restart_always {
        return if terminated.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let started = cs
        .iter()
        .any(|c| matches!(c.state, State::Running { .. }) || c.restarts > 0);
    if started { "Running" } else { "Pending" }
}

/// The `status` merge patch.
pub fn pod_status(o: &Observed) -> Value {
    let now = ts(&Utc::now());
    let ready =
        !o.containers.is_empty() && o.containers.iter().all(|c| c.ready) && o.failed.is_none();
    let cond = |t: &str, ok: bool, reason: Option<&str>| {
        json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now,
               "reason": reason})
    };
    let not_ready = (!ready).then_some("ContainersNotReady");
    let (reason, message) = match &o.failed {
        Some((r, m)) => (json!(r), json!(m)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "phase": phase(o),
        "reason": reason,
        "message": message,
        "hostIP": Ipv4Addr::LOCALHOST.to_string(),
        "hostIPs": [{"ip": Ipv4Addr::LOCALHOST.to_string()}],
        "podIP": o.ip.map(|i| i.to_string()),
        "podIPs": o.ip.map(|i| json!([{"ip": i.to_string()}])),
        "startTime": ts(&o.started),
        "conditions": [
            cond("PodScheduled", true, None),
            cond("Initialized", o.initialized, (!o.initialized).then_some("ContainersNotInitialized")),
            cond("ContainersReady", ready, not_ready),
            cond("Ready", ready, not_ready),
        ],
        "initContainerStatuses": o.init_containers.iter().map(Container::to_json).collect::<Vec<_>>(),
        "containerStatuses": o.containers.iter().map(Container::to_json).collect::<Vec<_>>(),
    })
}

/// Whether two status patches say the same (ignoring condition times).
pub fn same(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        for c in v["conditions"].as_array_mut().into_iter().flatten() {
            c["lastTransitionTime"] = Value::Null;
        }
        v
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(states: Vec<(State, bool, i32)>, always: bool) -> Observed {
        Observed {
            ip: Some(Ipv4Addr::new(127, 0, 0, 9)),
            started: Utc::now(),
            initialized: true,
            init_containers: vec![],
            containers: states
                .into_iter()
                .enumerate()
                .map(|(i, (state, ready, restarts))| Container {
                    state,
                    ready,
                    restarts,
                    ..Container::new(&format!("c{i}"), "img")
                })
                .collect(),
            failed: None,
            restart_always: always,
        }
    }

    #[test]
    fn a_running_ready_pod() {
        let now = Utc::now();
        let o = observed(vec![(State::Running { started: now }, true, 0)], true);
        let s = pod_status(&o);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "127.0.0.9");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        let c = &s["containerStatuses"][0];
        assert_eq!(
            (c["ready"].as_bool(), c["restartCount"].as_i64()),
            (Some(true), Some(0))
        );
        assert!(c["state"]["running"]["startedAt"].is_string());
        assert!(c["state"]["waiting"].is_null());
    }

    #[test]
    fn phases_follow_the_containers_and_the_restart_policy() {
        let now = Utc::now();
        let done = |code| State::Terminated {
            exit_code: code,
            started: now,
            finished: now,
        };
        let waiting = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
        };
        assert_eq!(
            phase(&observed(vec![(done(0), false, 0)], false)),
            "Succeeded"
        );
        assert_eq!(phase(&observed(vec![(done(1), false, 0)], false)), "Failed");
        assert_eq!(phase(&observed(vec![(done(1), false, 0)], true)), "Pending");
        assert_eq!(phase(&observed(vec![(waiting, false, 2)], true)), "Running");
        let mut o = observed(vec![(State::Running { started: now }, true, 0)], true);
        o.failed = Some(("ErrImageNeverPull".into(), "unknown image".into()));
        let s = pod_status(&o);
        assert_eq!(
            (s["phase"].as_str(), s["reason"].as_str()),
            (Some("Failed"), Some("ErrImageNeverPull"))
        );
    }

    #[test]
    fn sameness_ignores_condition_times() {
        let o = observed(vec![], true);
        let a = pod_status(&o);
        let mut b = a.clone();
        b["conditions"][0]["lastTransitionTime"] = json!("2000-01-01T00:00:00Z");
        assert!(same(&a, &b));
        b["phase"] = json!("Running");
        assert!(!same(&a, &b));
    }
}
