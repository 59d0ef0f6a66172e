//! Request handling as the fuzz target (`cargo xtask fuzz agent`) and the randomized test
//! drive it: any bytes, decoded as the agent's requests, go through validation and, when
//! valid, through the store (in memory). Nothing may panic, validation must never accept
//! what the store refuses, and what is written must read back exactly.

use crate::validate;
use hsm_proto::v1::{DeleteSecretRequest, ReadSecretRequest, WriteSecretRequest};
use hsm_store::{MemoryStore, MetadataChange, SecretData, SecretStore, SecretValue, StoreError};
use prost::Message;

/// Runs `bytes` through every request decoder and, where valid, the store.
pub fn requests(bytes: &[u8]) {
    if let Ok(request) = ReadSecretRequest::decode(bytes) {
        let _ = validate::read_path(&request.path);
    }
    if let Ok(request) = DeleteSecretRequest::decode(bytes) {
        let _ = validate::read_path(&request.path);
    }
    if let Ok(request) = WriteSecretRequest::decode(bytes) {
        write_then_read(request);
    }
}

/// Validates a write as the service does, then writes it to a fresh in-memory store and reads
/// it back.
pub fn write_then_read(request: WriteSecretRequest) {
    let Some(data) = &request.secret_data else {
        return;
    };
    if validate::write_path(&request.path).is_err()
        || validate::secret_data(&request.path, data).is_err()
        || request
            .metadata
            .as_ref()
            .is_some_and(|m| validate::metadata(m).is_err())
    {
        return;
    }
    let store = MemoryStore::in_memory();
    let values: SecretData = data
        .data
        .iter()
        .map(|(k, v)| (k.clone(), SecretValue::new(v.clone())))
        .collect();
    if let Err(e) = store.write(&request.path, &values, MetadataChange::Keep) {
        panic!("validation accepted a write the store refused: {e}");
    }
    match store.read(&request.path) {
        Ok(back) => assert_eq!(back, values, "read back differs"),
        Err(StoreError::NotFound(_)) => assert!(values.is_empty(), "written data not found"),
        Err(e) => panic!("reading back failed: {e}"),
    }
}
