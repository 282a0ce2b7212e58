//! Cross-implementation tests: Strata's layers against independent
//! JavaScript implementations (Signal's official Node client, ts-mls, mlkem),
//! driven through `tests/interop/peer.mjs`, in both directions.
//!
//! They need Node 20 and the harness's packages, which `scripts/setup`
//! installs (`npm ci` in `crates/crypto-cascade/tests/interop`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(unreachable_pub)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::{NOW, installation, rng};
use libsignal_protocol_syft::{self as signal, IdentityKey};
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};
use strata_cascade::layers::mlkem::{KEM_ALGORITHM, KEM_VERSION};
use strata_cascade::layers::mls::{DEFAULT_KEY_PACKAGE_LIFETIME_SECS, MLS_ALGORITHM, MLS_VERSION};
use strata_cascade::layers::signal::{SIGNAL_ALGORITHM, SIGNAL_VERSION};
use strata_cascade::{
    Cascade, InstallationId, InstallationIdentity, KemKeyPair, KeyPackageKind, Layer, MlKemLayer, MlsLayer,
    PeerIdentity, SignalBundle, SignalLayer, SignedKemKey,
};
use strata_proto::{Blob, BoundedVec, CascadedPayload, LayerMetadata, LayerParameters, ParamValue, Text};

const IGNORE: &str = "needs node and `npm ci` in crates/crypto-cascade/tests/interop";

struct JsPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    identity: IdentityKey,
    installation: InstallationId,
}

impl JsPeer {
    fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
        assert!(dir.join("node_modules").is_dir(), "{IGNORE}");
        let mut child = Command::new("node")
            .arg("peer.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Self {
            child,
            stdin,
            stdout,
            identity: IdentityKey::decode(&[5; 33]).unwrap_or_else(|_| placeholder_key()),
            installation: InstallationId::from_bytes([0; 16]),
        };
        let hello = peer.call(json!({"cmd": "hello"}));
        peer.identity = IdentityKey::decode(&bytes(&hello["identityKey"])).unwrap();
        peer.installation = InstallationId::from_bytes(bytes(&hello["installationId"]).try_into().unwrap());
        peer
    }

    fn call(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad answer {line:?}: {e}"));
        assert_eq!(v["ok"], true, "JS peer failed on {cmd}: {}", v["error"]);
        v
    }

    fn try_call(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn identity(&self) -> PeerIdentity {
        PeerIdentity {
            identity_key: self.identity,
            installation_id: self.installation,
        }
    }

    fn pin(&mut self, strata: &InstallationIdentity) {
        let key = hex::encode(strata.account().identity_key().serialize());
        self.call(json!({"cmd": "pin", "identityKey": key}));
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn placeholder_key() -> IdentityKey {
    *signal::IdentityKeyPair::generate(&mut rng(0)).identity_key()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// A one-layer payload around a foreign ciphertext, as the JS peer's layer
/// would have produced it.
fn payload(info: (&str, &str), params: LayerParameters, ciphertext: Vec<u8>, original: usize) -> CascadedPayload {
    let meta = LayerMetadata {
        algorithm: Text::new(info.0).unwrap(),
        version: Text::new(info.1).unwrap(),
        timestamp: NOW,
        input_size: original as u64,
        output_size: ciphertext.len() as u64,
        processing_time: 0,
    };
    CascadedPayload {
        final_size: ciphertext.len() as u64,
        final_ciphertext: Some(Blob::new(ciphertext).unwrap()),
        layers: BoundedVec::new(vec![meta]).unwrap(),
        layer_parameters: BoundedVec::new(vec![params]).unwrap(),
        total_processing_time: 0,
        original_size: original as u64,
        timestamp: Some(NOW),
    }
}

fn one(layer: impl Layer + 'static, local: InstallationId, remote: InstallationId) -> Cascade {
    Cascade::new(vec![Box::new(layer)], local, remote).unwrap()
}

fn uint_params(pairs: &[(&str, u64)]) -> LayerParameters {
    let mut p = LayerParameters::new();
    for (k, v) in pairs {
        p.insert(k, ParamValue::Uint(*v)).unwrap();
    }
    p
}

fn ciphertext(p: &CascadedPayload) -> String {
    hex::encode(p.final_ciphertext.as_ref().unwrap().as_bytes())
}

fn setup(seed: u64) -> (ChaCha20Rng, InstallationIdentity, JsPeer) {
    let mut rng = rng(seed);
    let strata = installation(&mut rng);
    let mut js = JsPeer::start();
    js.pin(&strata);
    (rng, strata, js)
}

#[test]
fn ml_kem_layer_both_directions() {
    let (mut rng, strata, mut js) = setup(40);
    let (me, them) = (strata.installation_id(), js.installation);

    // Strata → JS: JS's identity-signed key, verified by Strata; the first
    // message of the epoch carries the KEM ciphertext; JS opens it with its
    // own implementation of the documented schedule.
    let key = js.call(json!({"cmd": "kem.key", "keyId": 3}));
    let js_key = SignedKemKey {
        installation_id: js.installation,
        key_id: 3,
        encapsulation_key: bytes(&key["encapsulationKey"]),
        signature: bytes(&key["signature"]),
    };
    let own = KemKeyPair::generate(&strata, 1, &mut rng).unwrap();
    let own_public = own.public().clone();
    let mut layer = MlKemLayer::new(me, js.identity(), own);
    layer.set_peer_key(js_key.clone()).unwrap();
    let mut forged = js_key.clone();
    forged.encapsulation_key[10] ^= 1;
    assert!(layer.set_peer_key(forged).is_err(), "a substituted key must not verify");
    let mut sender = one(layer, me, them);
    let m = sender.encrypt(b"to the JS peer", NOW, &mut rng).unwrap();
    let p = &m.layer_parameters.as_slice()[0];
    let opened = js.call(json!({
        "cmd": "kem.open", "sender": hex::encode(me.as_bytes()), "timestamp": NOW, "originalSize": m.original_size,
        "epoch": p.uint("epoch").unwrap(), "counter": p.uint("counter").unwrap(), "keyId": p.uint("kemKeyId").unwrap(),
        "kemCiphertext": hex::encode(p.bytes("kemCiphertext").unwrap()), "ciphertext": ciphertext(&m),
    }));
    assert_eq!(bytes(&opened["plaintext"]), b"to the JS peer");

    // JS → Strata: JS verifies Strata's key binding with Signal's client,
    // encapsulates with `mlkem`, seals; Strata's layer opens it.
    let key_json = json!({
        "installationId": hex::encode(own_public.installation_id.as_bytes()), "keyId": own_public.key_id,
        "encapsulationKey": hex::encode(&own_public.encapsulation_key), "signature": hex::encode(&own_public.signature),
    });
    let sealed = js.call(json!({
        "cmd": "kem.seal", "receiver": hex::encode(me.as_bytes()), "timestamp": NOW, "epoch": 1,
        "key": key_json, "plaintext": hex::encode(b"from the JS peer"),
    }));
    let mut params = uint_params(&[("counter", 0), ("epoch", 1), ("kemKeyId", u64::from(own_public.key_id))]);
    params
        .insert(
            "kemCiphertext",
            ParamValue::Bytes(Blob::new(bytes(&sealed["kemCiphertext"])).unwrap()),
        )
        .unwrap();
    let incoming = payload((KEM_ALGORITHM, KEM_VERSION), params, bytes(&sealed["ciphertext"]), 16);
    assert_eq!(sender.decrypt(&incoming, &mut rng).unwrap(), b"from the JS peer");
    // And a replay of it is refused.
    assert!(sender.decrypt(&incoming, &mut rng).is_err());
    // A key signed by someone else is refused by the JS side too.
    let mut bad = key_json.clone();
    bad["keyId"] = json!(own_public.key_id + 1);
    let r = js.try_call(
        json!({"cmd": "kem.seal", "receiver": hex::encode(me.as_bytes()), "timestamp": NOW,
        "epoch": 2, "key": bad, "plaintext": "00"}),
    );
    assert_eq!(r["ok"], false);
}

fn strata_bundle_json(bundle: &SignalBundle) -> Value {
    let b = bundle.inner();
    json!({
        "registrationId": b.registration_id().unwrap(), "deviceId": u32::from(b.device_id().unwrap()),
        "preKeyId": b.pre_key_id().unwrap().map(u32::from),
        "preKey": b.pre_key_public().unwrap().map(|k| hex::encode(k.serialize())),
        "signedPreKeyId": u32::from(b.signed_pre_key_id().unwrap()),
        "signedPreKey": hex::encode(b.signed_pre_key_public().unwrap().serialize()),
        "signedPreKeySignature": hex::encode(b.signed_pre_key_signature().unwrap()),
        "kyberPreKeyId": u32::from(b.kyber_pre_key_id().unwrap()),
        "kyberPreKey": hex::encode(b.kyber_pre_key_public().unwrap().serialize()),
        "kyberPreKeySignature": hex::encode(b.kyber_pre_key_signature().unwrap()),
        "identityKey": hex::encode(b.identity_key().unwrap().serialize()),
    })
}

fn js_bundle(v: &Value) -> SignalBundle {
    let key = |k: &str| signal::PublicKey::deserialize(&bytes(&v[k])).unwrap();
    let bundle = signal::PreKeyBundle::new(
        v["registrationId"].as_u64().unwrap() as u32,
        signal::DeviceId::new(v["deviceId"].as_u64().unwrap() as u8).unwrap(),
        Some((
            signal::PreKeyId::from(v["preKeyId"].as_u64().unwrap() as u32),
            key("preKey"),
        )),
        signal::SignedPreKeyId::from(v["signedPreKeyId"].as_u64().unwrap() as u32),
        key("signedPreKey"),
        bytes(&v["signedPreKeySignature"]),
        signal::KyberPreKeyId::from(v["kyberPreKeyId"].as_u64().unwrap() as u32),
        signal::kem::PublicKey::deserialize(&bytes(&v["kyberPreKey"])).unwrap(),
        bytes(&v["kyberPreKeySignature"]),
        IdentityKey::decode(&bytes(&v["identityKey"])).unwrap(),
    )
    .unwrap();
    SignalBundle::new(bundle)
}

/// Sends Strata → JS through the Signal layer; returns the message type.
fn signal_to_js(c: &mut Cascade, js: &mut JsPeer, rng: &mut ChaCha20Rng, text: &[u8]) -> u64 {
    let m = c.encrypt(text, NOW, rng).unwrap();
    let kind = m.layer_parameters.as_slice()[0].uint("type").unwrap();
    let r = js.call(json!({"cmd": "signal.decrypt", "type": kind, "body": ciphertext(&m)}));
    assert_eq!(bytes(&r["plaintext"]), text);
    kind
}

fn signal_from_js(c: &mut Cascade, js: &mut JsPeer, rng: &mut ChaCha20Rng, text: &[u8]) -> u64 {
    let r = js.call(json!({"cmd": "signal.encrypt", "plaintext": hex::encode(text)}));
    let kind = r["type"].as_u64().unwrap();
    let p = payload(
        (SIGNAL_ALGORITHM, SIGNAL_VERSION),
        uint_params(&[("type", kind)]),
        bytes(&r["body"]),
        text.len(),
    );
    assert_eq!(c.decrypt(&p, rng).unwrap(), text);
    kind
}

#[test]
fn pqxdh_strata_initiates() {
    let (mut rng, strata, mut js) = setup(41);
    let bundle = js_bundle(&js.call(json!({"cmd": "signal.bundle"})));
    let mut layer = SignalLayer::new(&strata, js.identity()).unwrap();
    layer.process_bundle(&bundle, NOW, &mut rng).unwrap();
    let mut c = one(layer, strata.installation_id(), js.installation);
    assert_eq!(signal_to_js(&mut c, &mut js, &mut rng, b"PQXDH from Strata"), 3);
    assert_eq!(signal_from_js(&mut c, &mut js, &mut rng, b"reply from JS"), 2);
    assert_eq!(signal_to_js(&mut c, &mut js, &mut rng, b"ratcheted"), 2);
    assert_eq!(signal_from_js(&mut c, &mut js, &mut rng, b"and back"), 2);
}

#[test]
fn pqxdh_js_initiates() {
    let (mut rng, strata, mut js) = setup(42);
    let mut layer = SignalLayer::new(&strata, js.identity()).unwrap();
    let bundle = layer.pre_key_bundle(NOW, &mut rng).unwrap();
    let mut cmd = strata_bundle_json(&bundle);
    cmd["cmd"] = json!("signal.process");
    js.call(cmd);
    let mut c = one(layer, strata.installation_id(), js.installation);
    assert_eq!(signal_from_js(&mut c, &mut js, &mut rng, b"PQXDH from JS"), 3);
    assert_eq!(signal_to_js(&mut c, &mut js, &mut rng, b"reply from Strata"), 2);
    assert_eq!(signal_from_js(&mut c, &mut js, &mut rng, b"ratcheted"), 2);
}

fn mls_to_js(c: &mut Cascade, js: &mut JsPeer, rng: &mut ChaCha20Rng, text: &[u8]) {
    let m = c.encrypt(text, NOW, rng).unwrap();
    let r = js.call(json!({"cmd": "mls.decrypt", "message": ciphertext(&m)}));
    assert_eq!(bytes(&r["plaintext"]), text);
}

fn mls_from_js(c: &mut Cascade, js: &mut JsPeer, rng: &mut ChaCha20Rng, text: &[u8]) {
    let r = js.call(json!({"cmd": "mls.encrypt", "plaintext": hex::encode(text)}));
    let params = uint_params(&[("epoch", r["epoch"].as_u64().unwrap())]);
    let p = payload((MLS_ALGORITHM, MLS_VERSION), params, bytes(&r["message"]), text.len());
    assert_eq!(c.decrypt(&p, rng).unwrap(), text);
}

#[test]
fn mls_key_packages_validated_both_ways() {
    let (_rng, strata, mut js) = setup(43);
    let mut layer = MlsLayer::new(&strata, js.identity()).unwrap();
    // Strata's last-resort KeyPackage, checked by ts-mls (signatures) and by
    // Signal's client (the identity binding).
    let kp = layer
        .key_package(KeyPackageKind::LastResort, DEFAULT_KEY_PACKAGE_LIFETIME_SECS)
        .unwrap();
    let r = js.call(json!({"cmd": "mls.checkKeyPackage", "keyPackage": hex::encode(&kp)}));
    assert_eq!(
        (r["signatures"].as_bool(), r["binding"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        (r["current"].as_bool(), r["lastResort"].as_bool()),
        (Some(true), Some(true))
    );
    let mut bad = kp.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    let r = js.call(json!({"cmd": "mls.checkKeyPackage", "keyPackage": hex::encode(&bad)}));
    assert_eq!(r["signatures"], false);
    // ts-mls's KeyPackage carrying a Strata binding made with Signal's client.
    let js_kp = bytes(&js.call(json!({"cmd": "mls.keyPackage"}))["keyPackage"]);
    let validated = layer.validate_key_package(&js_kp).unwrap();
    assert!(!validated.last_resort());
    // Pinned to someone else, the same package is refused.
    let other = installation(&mut rng(44));
    let wrong = MlsLayer::new(&strata, other.peer_identity()).unwrap();
    assert!(wrong.validate_key_package(&js_kp).is_err());
}

#[test]
fn mls_welcome_strata_creates_js_joins() {
    let (mut rng, strata, mut js) = setup(45);
    let mut layer = MlsLayer::new(&strata, js.identity()).unwrap();
    let js_kp = bytes(&js.call(json!({"cmd": "mls.keyPackage"}))["keyPackage"]);
    let welcome = layer.create_group(&js_kp).unwrap();
    let r = js.call(json!({"cmd": "mls.join", "welcome": hex::encode(&welcome)}));
    assert_eq!(r["epoch"].as_u64(), layer.epoch());
    let mut c = one(layer, strata.installation_id(), js.installation);
    mls_to_js(&mut c, &mut js, &mut rng, b"MLS from Strata");
    mls_from_js(&mut c, &mut js, &mut rng, b"MLS from JS");
    mls_to_js(&mut c, &mut js, &mut rng, b"again");
}

#[test]
fn mls_welcome_js_creates_strata_joins() {
    let (mut rng, strata, mut js) = setup(46);
    let mut layer = MlsLayer::new(&strata, js.identity()).unwrap();
    let kp = layer
        .key_package(KeyPackageKind::OneTime, DEFAULT_KEY_PACKAGE_LIFETIME_SECS)
        .unwrap();
    let r = js.call(json!({"cmd": "mls.createGroupWith", "keyPackage": hex::encode(&kp)}));
    layer.join_group(&bytes(&r["welcome"])).unwrap();
    assert_eq!(layer.epoch(), r["epoch"].as_u64());
    let mut c = one(layer, strata.installation_id(), js.installation);
    mls_from_js(&mut c, &mut js, &mut rng, b"MLS from JS");
    mls_to_js(&mut c, &mut js, &mut rng, b"MLS from Strata");
    mls_from_js(&mut c, &mut js, &mut rng, b"again");
}
