//! Bytes as the Go agent puts them on the wire decode into these types and encode back the
//! same. Each fixture is derived by hand from the protobuf encoding (tag = field << 3 | wire
//! type; 2 = length-delimited, 0 = varint; a map entry is a message with key = 1, value = 2),
//! so a changed field number or type fails here.

use hsm_proto::v1::*;
use prost::Message;
use std::collections::BTreeMap;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(hex_bytes: &str, expected: M) {
    let bytes = hex::decode(hex_bytes.replace(' ', "")).unwrap();
    let decoded = M::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, expected);
    assert_eq!(hex::encode(expected.encode_to_vec()), hex::encode(&bytes));
}

#[test]
fn write_secret_request() {
    round_trip(
        // 1 path "db": 0a 02 "db"
        "0a02 6462 \
         1208 0a06 0a016b 120176 \
         1a16 0a0164 1211 0a0c 73796e632e76657273696f6e 120131",
        // 2 secret_data {1 data {"k": "v"}}: 12 08 [0a 06 [0a 01 "k" 12 01 "v"]]
        // 3 metadata {1 "d", 2 labels {"sync.version": "1"}}: 1a 16 [0a 01 "d" 12 11 [...]]
        WriteSecretRequest {
            path: "db".into(),
            secret_data: Some(SecretData {
                data: BTreeMap::from([("k".into(), b"v".to_vec())]),
            }),
            metadata: Some(SecretMetadata {
                description: "d".into(),
                labels: BTreeMap::from([("sync.version".into(), "1".into())]),
                ..Default::default()
            }),
        },
    );
}

#[test]
fn read_secret_response() {
    round_trip(
        "0a08 0a06 0a016b 120176",
        ReadSecretResponse {
            secret_data: Some(SecretData {
                data: BTreeMap::from([("k".into(), b"v".to_vec())]),
            }),
        },
    );
}

#[test]
fn delete_secret_request_with_a_key() {
    round_trip(
        "0a02 6462 1208 70617373776f7264",
        DeleteSecretRequest {
            path: "db".into(),
            key: "password".into(),
        },
    );
}

#[test]
fn change_pin_request() {
    round_trip(
        "0a04 31323334 1204 35363738",
        ChangePinRequest {
            old_pin: "1234".into(),
            new_pin: "5678".into(),
        },
    );
}

#[test]
fn hsm_info_and_get_info_response() {
    let info = HsmInfo {
        label: "L".into(),
        manufacturer: "M".into(),
        model: "X".into(),
        serial_number: "S".into(),
        firmware_version: "1.2".into(),
    };
    round_trip("0a014c 12014d 1a0158 220153 2a03312e32", info.clone());
    round_trip(
        "0a11 0a014c 12014d 1a0158 220153 2a03312e32",
        GetInfoResponse {
            hsm_info: Some(info),
        },
    );
}

#[test]
fn list_health_connected_checksum_metadata() {
    round_trip(
        "0a0161 0a0162",
        ListSecretsResponse {
            paths: vec!["a".into(), "b".into()],
        },
    );
    round_trip(
        "0a07 6865616c746879 1202 6f6b",
        HealthResponse {
            status: "healthy".into(),
            message: "ok".into(),
        },
    );
    round_trip("0801", IsConnectedResponse { connected: true });
    round_trip(
        "0a09 7368613235363a6162",
        GetChecksumResponse {
            checksum: "sha256:ab".into(),
        },
    );
    round_trip(
        // 1 metadata (11 bytes) {5 created_at "json": 2a 04 ..., 6 source "api": 32 03 ...}
        "0a0b 2a04 6a736f6e 3203 617069",
        ReadMetadataResponse {
            metadata: Some(SecretMetadata {
                created_at: "json".into(),
                source: "api".into(),
                ..Default::default()
            }),
        },
    );
    round_trip(
        "0a02 6462",
        ListSecretsRequest {
            prefix: "db".into(),
        },
    );
}
