//! The agent's gRPC contract, `hsm.v1.HSMAgent`, generated from `proto/hsm/v1/hsm.proto` at
//! build time. The first ten RPCs are wire-compatible with the Go operator's agent.

/// `hsm.v1`: messages, the `HSMAgent` client and server.
pub mod hsm {
    /// Version 1 of the agent API.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("hsm.v1");
    }
}

pub use hsm::v1;
