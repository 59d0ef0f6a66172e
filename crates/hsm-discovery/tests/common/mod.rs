//! Test doubles and fixtures shared by the integration tests.
#![allow(dead_code)]

pub mod cluster;
pub mod kubelet;
