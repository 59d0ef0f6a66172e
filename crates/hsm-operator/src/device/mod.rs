//! What the manager runs for each HSMDevice: pure builders of the objects (§6.1–6.3 of the
//! contract), unit-tested field by field. The controllers that apply them come with the
//! device reports of discovery.

pub mod agent;
