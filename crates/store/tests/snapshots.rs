//! Persisted records are frozen: a change here is a schema change and needs
//! a new `SCHEMA_VERSION` and a migration.

use strata_store::{Contact, IncomingMessage, KeyChange, OutgoingMessage};

#[test]
fn outgoing_message_encoding() {
    let m = OutgoingMessage {
        message_id: "m1".into(),
        peer: "bob".into(),
        created_ms: 1_717_000_000_000,
        body: b"hello".to_vec(),
        frames: vec![b"f1".to_vec()],
        attempts: 2,
    };
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(
        json,
        r#"{"messageId":"m1","peer":"bob","createdMs":1717000000000,"body":"aGVsbG8=","frames":["ZjE="],"attempts":2}"#
    );
    assert_eq!(serde_json::from_str::<OutgoingMessage>(&json).unwrap(), m);
}

#[test]
fn incoming_message_encoding() {
    let m = IncomingMessage {
        peer: "alice".into(),
        message_id: "a1".into(),
        received_ms: 5,
        body: b"hi".to_vec(),
    };
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(
        json,
        r#"{"peer":"alice","messageId":"a1","receivedMs":5,"body":"aGk="}"#
    );
    assert_eq!(serde_json::from_str::<IncomingMessage>(&json).unwrap(), m);
}

#[test]
fn contact_encoding() {
    let c = Contact {
        installation_id: "bob".into(),
        identity_key: vec![5, 1],
        first_seen_ms: 1,
        verified: true,
        invited: false,
        offered_key: Some(vec![5, 2]),
        key_history: vec![KeyChange {
            old_key: vec![5, 0],
            new_key: vec![5, 1],
            accepted_ms: 0,
        }],
    };
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        json,
        r#"{"installationId":"bob","identityKey":"BQE=","firstSeenMs":1,"verified":true,"offeredKey":"BQI=","keyHistory":[{"oldKey":"BQA=","newKey":"BQE=","acceptedMs":0}]}"#
    );
    assert_eq!(serde_json::from_str::<Contact>(&json).unwrap(), c);
}

#[test]
fn pooled_key_package_encoding() {
    let p = strata_store::PooledKeyPackage {
        key_ref: vec![1, 2],
        init_key: vec![3, 4],
        not_after_s: 1_800_000_000,
        last_resort: true,
        bytes: vec![5],
    };
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        json,
        r#"{"keyRef":"AQI=","initKey":"AwQ=","notAfterS":1800000000,"lastResort":true,"bytes":"BQ=="}"#
    );
    assert_eq!(
        serde_json::from_str::<strata_store::PooledKeyPackage>(&json).unwrap(),
        p
    );
}

#[test]
fn peer_key_package_encoding() {
    let p = strata_store::PeerKeyPackage {
        installation_id: "0a0b".into(),
        key_package: strata_store::StoredKeyPackage {
            key_ref: vec![1, 2],
            init_key: vec![3, 4],
            not_after_s: 1_800_000_000,
            last_resort: false,
            bytes: vec![5],
        },
    };
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        json,
        r#"{"installationId":"0a0b","keyRef":"AQI=","initKey":"AwQ=","notAfterS":1800000000,"lastResort":false,"bytes":"BQ=="}"#
    );
    assert_eq!(serde_json::from_str::<strata_store::PeerKeyPackage>(&json).unwrap(), p);
}
