//! Wire compatibility with the Go operator's `hsm.v1` messages.
//!
//! Each fixture below is the protobuf encoding a Go client or agent produces for a message,
//! written out by hand from the encoding rules so that it does not depend on this crate's
//! code generator: a field's tag is the varint `(field_number << 3) | wire_type`, with wire
//! type 0 for varints (bool, int64, uint64) and 2 for length-delimited values (string, bytes,
//! embedded messages, map entries); a length-delimited value is its varint length followed
//! by its bytes; a map field is a repeated embedded message per entry, with the key as field
//! 1 and the value as field 2. Fields holding their default value are not written, and
//! fields come in field-number order (as Go's deterministic marshalling and prost write them).
//!
//! Each test decodes a fixture into the generated Rust type, compares it field by field with
//! the expected value, and re-encodes it to the very same bytes. Renumbering or retyping any
//! field of the contract makes these tests fail.

use std::collections::BTreeMap;

use hsm_proto::hsm::v1::{
    ChangePinRequest, DeleteSecretRequest, GetInfoResponse, HealthResponse, HsmInfo,
    IsConnectedResponse, ListSecretsResponse, ReadSecretResponse, SecretData, SecretMetadata,
    WriteSecretRequest,
};
use prost::Message;

/// Joins hex fragments (whitespace ignored) into bytes.
fn fixture(parts: &[&str]) -> Vec<u8> {
    let hex: String = parts.concat().split_whitespace().collect();
    hex::decode(hex).expect("fixture is valid hex")
}

/// Decodes `bytes` as `M`, checks it equals `expected`, and checks it re-encodes to `bytes`.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8], expected: &M) {
    let decoded = M::decode(bytes).expect("fixture decodes");
    assert_eq!(&decoded, expected, "decoded message differs");
    assert_eq!(
        hex::encode(decoded.encode_to_vec()),
        hex::encode(bytes),
        "re-encoding differs from the Go bytes"
    );
    assert_eq!(
        hex::encode(expected.encode_to_vec()),
        hex::encode(bytes),
        "encoding the expected value differs from the Go bytes"
    );
}

fn bytes_map(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

#[test]
fn write_secret_request_with_data_and_metadata() {
    let bytes = fixture(&[
        // path = 1 (string): tag 1<<3|2 = 0x0a, length 2, "db"
        "0a 02 6462",
        // secret_data = 2 (SecretData): tag 2<<3|2 = 0x12, length 29 = 0x1d
        "12 1d",
        //   SecretData.data = 1, entry "password" -> 00 ff: tag 0x0a, entry length 14 = 0x0e
        "0a 0e",
        //     key = 1 (string): tag 0x0a, length 8, "password"
        "0a 08 70617373776f7264",
        //     value = 2 (bytes): tag 2<<3|2 = 0x12, length 2, 00 ff (not UTF-8: bytes, not string)
        "12 02 00ff",
        //   SecretData.data = 1, entry "user" -> "app": tag 0x0a, entry length 11 = 0x0b
        "0a 0b",
        //     key = 1: tag 0x0a, length 4, "user"; value = 2: tag 0x12, length 3, "app"
        "0a 04 75736572 12 03 617070",
        // metadata = 3 (SecretMetadata): tag 3<<3|2 = 0x1a, length 61 = 0x3d
        "1a 3d",
        //   description = 1 (string): tag 0x0a, length 1, "d"
        "0a 01 64",
        //   labels = 2 (map<string,string>), entry: tag 2<<3|2 = 0x12, entry length 17 = 0x11
        "12 11",
        //     key = 1: tag 0x0a, length 12, "sync.version"; value = 2: tag 0x12, length 1, "7"
        "0a 0c 73796e632e76657273696f6e 12 01 37",
        //   format = 3 (string): tag 3<<3|2 = 0x1a, length 4, "json"
        "1a 04 6a736f6e",
        //   data_type = 4 (string): tag 4<<3|2 = 0x22, length 4, "text"
        "22 04 74657874",
        //   created_at = 5 (string): tag 5<<3|2 = 0x2a, length 20, "2025-01-01T00:00:00Z"
        "2a 14 323032352d30312d30315430303a30303a30305a",
        //   source = 6 (string): tag 6<<3|2 = 0x32, length 3, "api"
        "32 03 617069",
    ]);
    let expected = WriteSecretRequest {
        path: "db".into(),
        secret_data: Some(SecretData {
            data: bytes_map(&[("password", &[0x00, 0xff]), ("user", b"app")]),
        }),
        metadata: Some(SecretMetadata {
            description: "d".into(),
            labels: [("sync.version".to_owned(), "7".to_owned())].into(),
            format: "json".into(),
            data_type: "text".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            source: "api".into(),
        }),
    };
    assert_wire(&bytes, &expected);
}

#[test]
fn write_secret_request_tombstone_keeps_empty_secret_data() {
    // The Go agent rejects a nil secret_data but accepts an empty one (a tombstone); the two
    // must stay distinguishable on the wire.
    let bytes = fixture(&[
        // path = 1: tag 0x0a, length 2, "db"
        "0a 02 6462",
        // secret_data = 2: tag 0x12, length 0 (present, no entries)
        "12 00",
    ]);
    let expected = WriteSecretRequest {
        path: "db".into(),
        secret_data: Some(SecretData::default()),
        metadata: None,
    };
    assert_wire(&bytes, &expected);

    // Without the secret_data field at all, it decodes as absent.
    let absent = WriteSecretRequest::decode(&fixture(&["0a 02 6462"])[..]).unwrap();
    assert_eq!(absent.secret_data, None);
}

#[test]
fn read_secret_response() {
    let bytes = fixture(&[
        // secret_data = 1 (SecretData): tag 0x0a, length 13 = 0x0d
        "0a 0d",
        //   data = 1, one entry: tag 0x0a, entry length 11 = 0x0b
        "0a 0b",
        //     key = 1: tag 0x0a, length 5, "token"; value = 2 (bytes): tag 0x12, length 2, 01 02
        "0a 05 746f6b656e 12 02 0102",
    ]);
    let expected = ReadSecretResponse {
        secret_data: Some(SecretData {
            data: bytes_map(&[("token", &[0x01, 0x02])]),
        }),
    };
    assert_wire(&bytes, &expected);
}

#[test]
fn list_secrets_response() {
    let bytes = fixture(&[
        // paths = 1 (repeated string): one tag 0x0a per element
        "0a 01 61",     // "a"
        "0a 03 622f63", // "b/c"
    ]);
    let expected = ListSecretsResponse {
        paths: vec!["a".into(), "b/c".into()],
    };
    assert_wire(&bytes, &expected);
}

#[test]
fn hsm_info_and_get_info_response() {
    let info = [
        // label = 1 (string): tag 0x0a, length 1, "L"
        "0a 01 4c",
        // manufacturer = 2: tag 0x12, length 1, "M"
        "12 01 4d",
        // model = 3: tag 0x1a, length 1, "P"
        "1a 01 50",
        // serial_number = 4: tag 0x22, length 2, "01"
        "22 02 3031",
        // firmware_version = 5: tag 0x2a, length 3, "1.2"
        "2a 03 312e32",
    ];
    let expected = HsmInfo {
        label: "L".into(),
        manufacturer: "M".into(),
        model: "P".into(),
        serial_number: "01".into(),
        firmware_version: "1.2".into(),
    };
    assert_wire(&fixture(&info), &expected);

    // GetInfoResponse.hsm_info = 1 (HSMInfo): tag 0x0a, length 3+3+3+4+5 = 18 = 0x12
    let mut response = vec!["0a 12"];
    response.extend(info);
    assert_wire(
        &fixture(&response),
        &GetInfoResponse {
            hsm_info: Some(expected),
        },
    );
}

#[test]
fn change_pin_request() {
    let bytes = fixture(&[
        // old_pin = 1 (string): tag 0x0a, length 4, "1234"
        "0a 04 31323334",
        // new_pin = 2 (string): tag 0x12, length 4, "5678"
        "12 04 35363738",
    ]);
    let expected = ChangePinRequest {
        old_pin: "1234".into(),
        new_pin: "5678".into(),
    };
    assert_wire(&bytes, &expected);
}

#[test]
fn delete_secret_request_with_key() {
    let bytes = fixture(&[
        // path = 1 (string): tag 0x0a, length 2, "db"
        "0a 02 6462",
        // key = 2 (string): tag 0x12, length 4, "user"
        "12 04 75736572",
    ]);
    let expected = DeleteSecretRequest {
        path: "db".into(),
        key: "user".into(),
    };
    assert_wire(&bytes, &expected);
}

#[test]
fn health_response() {
    let bytes = fixture(&[
        // status = 1 (string): tag 0x0a, length 7, "healthy"
        "0a 07 6865616c746879",
        // message = 2 (string): tag 0x12, length 2, "ok"
        "12 02 6f6b",
    ]);
    let expected = HealthResponse {
        status: "healthy".into(),
        message: "ok".into(),
    };
    assert_wire(&bytes, &expected);
}

#[test]
fn is_connected_response_is_a_varint_bool() {
    // connected = 1 (bool): tag 1<<3|0 = 0x08, varint 1
    assert_wire(
        &fixture(&["08 01"]),
        &IsConnectedResponse { connected: true },
    );
    // false is the default and is not written at all
    assert_wire(&[], &IsConnectedResponse { connected: false });
}

#[test]
fn debug_never_prints_values_or_pins() {
    let data = SecretData {
        data: bytes_map(&[("password", b"hunter2")]),
    };
    let shown = format!("{data:?}");
    assert!(shown.contains("password"), "{shown}");
    assert!(shown.contains("7 bytes"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");

    let request = WriteSecretRequest {
        path: "db".into(),
        secret_data: Some(data),
        metadata: None,
    };
    assert!(!format!("{request:?}").contains("hunter2"));
    assert!(!format!("{request:#?}").contains("hunter2"));

    let pin = ChangePinRequest {
        old_pin: "123456".into(),
        new_pin: "654321".into(),
    };
    let shown = format!("{pin:?}");
    assert!(
        !shown.contains("123456") && !shown.contains("654321"),
        "{shown}"
    );
}
