// An independent peer for Strata's cascade layers, built only from
// third-party JavaScript implementations: Signal's official Node client
// (@signalapp/libsignal-client), ts-mls, and mlkem (+ @noble/hashes, node:crypto).
//
// The ML-KEM layer is re-implemented here from the normative key schedule in
// the strata-cascade crate docs, so these tests also check that the docs are
// complete and exact.
//
// Protocol: one JSON command per line on stdin, one JSON answer per line on
// stdout ({"ok": true, ...} or {"ok": false, "error": "..."}). Bytes are hex.

import crypto from "node:crypto";
import readline from "node:readline";

import * as Signal from "@signalapp/libsignal-client";
import { expand, extract } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { createMlKem768 } from "mlkem";
import * as Mls from "ts-mls";
import { verifyKeyPackage } from "ts-mls/keyPackage.js";
import { verifyLeafNodeSignatureKeyPackage } from "ts-mls/leafNode.js";

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));
const utf8 = (s) => new Uint8Array(Buffer.from(s, "utf8"));
const cat = (...parts) => new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));
const u8 = (n) => Uint8Array.of(n);
const u16 = (n) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return new Uint8Array(b); };
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return new Uint8Array(b); };
const u64 = (n) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return new Uint8Array(b); };
const lp = (bytes) => cat(u32(bytes.length), bytes);
const same = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

// ---- identity ----------------------------------------------------------------

const identity = Signal.IdentityKeyPair.generate();
const installationId = new Uint8Array(crypto.randomBytes(16));
const registrationId = 4242;
let pinned = null; // the Strata peer's identity key (Signal.PublicKey)

// Strata key bindings (strata-cascade `identity` module docs).
const MLS_SUITE = 1;
const mlsBinding = (inst, key) =>
  cat(utf8("strata/v1/binding/mls-signature-key"), u8(0), inst, u16(MLS_SUITE), u32(key.length), key);
const kemBinding = (inst, keyId, ek) => cat(utf8("strata/v1/binding/ml-kem-768-key"), u8(0), inst, u32(keyId), ek);

// ---- Signal ------------------------------------------------------------------

class Sessions extends Signal.SessionStore {
  m = new Map();
  async saveSession(a, r) { this.m.set(a.toString(), r.serialize()); }
  async getSession(a) { const b = this.m.get(a.toString()); return b ? Signal.SessionRecord.deserialize(b) : null; }
  async getExistingSessions(as) { return Promise.all(as.map((a) => this.getSession(a))).then((r) => r.filter(Boolean)); }
}
class Identities extends Signal.IdentityKeyStore {
  async getIdentityKey() { return identity.privateKey; }
  async getLocalRegistrationId() { return registrationId; }
  async saveIdentity(_a, key) {
    if (!pinned || !same(key.serialize(), pinned.serialize())) throw new Error("untrusted identity");
    return Signal.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity(_a, key) { return !!pinned && same(key.serialize(), pinned.serialize()); }
  async getIdentity() { return pinned; }
}
class PreKeys extends Signal.PreKeyStore {
  m = new Map();
  async savePreKey(id, r) { this.m.set(id, r.serialize()); }
  async getPreKey(id) { return Signal.PreKeyRecord.deserialize(this.m.get(id)); }
  async removePreKey(id) { this.m.delete(id); }
}
class SignedPreKeys extends Signal.SignedPreKeyStore {
  m = new Map();
  async saveSignedPreKey(id, r) { this.m.set(id, r.serialize()); }
  async getSignedPreKey(id) { return Signal.SignedPreKeyRecord.deserialize(this.m.get(id)); }
}
class KyberPreKeys extends Signal.KyberPreKeyStore {
  m = new Map();
  used = new Set();
  async saveKyberPreKey(id, r) { this.m.set(id, r.serialize()); }
  async getKyberPreKey(id) { return Signal.KyberPreKeyRecord.deserialize(this.m.get(id)); }
  async markKyberPreKeyUsed(id, signedId, baseKey) {
    const k = `${id}/${signedId}/${hex(baseKey.serialize())}`;
    if (this.used.has(k)) throw new Error("reused base key");
    this.used.add(k);
  }
}
const sessions = new Sessions();
const identities = new Identities();
const preKeys = new PreKeys();
const signedPreKeys = new SignedPreKeys();
const kyberPreKeys = new KyberPreKeys();
const strataAddr = Signal.ProtocolAddress.new("strata", 1);
const localAddr = Signal.ProtocolAddress.new("js-peer", 1);

// ---- MLS -----------------------------------------------------------------------

const mlsImpl = await Mls.getCiphersuiteImpl(
  Mls.getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"),
);
let ownKeyPackage = null;
let group = null;

function parseStrataCredential(identityBytes) {
  if (identityBytes.length !== 1 + 33 + 16 + 64 || identityBytes[0] !== 1) return null;
  return {
    identityKey: identityBytes.slice(1, 34),
    installationId: identityBytes.slice(34, 50),
    signature: identityBytes.slice(50),
  };
}

// ---- ML-KEM layer (independent implementation of the normative schedule) ----

const kem = await createMlKem768();
const kemKeys = new Map(); // keyId -> decapsulation key

const hkdfExpand = (prk, ...info) => expand(sha256, prk, cat(...info), 32);
function kemEpoch(ss, sender, receiver, epoch, keyId, ct) {
  const prk = extract(sha256, ss, utf8("strata/v1/ml-kem-768/epoch"));
  const ctx = cat(sender, receiver, u64(epoch), u32(keyId), lp(ct));
  return hkdfExpand(prk, utf8("strata/v1/"), utf8("ml-kem-768/epoch-chain"), ctx);
}
function kemMessageKey(ck0, counter) {
  let ck = ck0;
  for (let i = 0; i < counter; i++) ck = hkdfExpand(ck, utf8("strata/v1/"), utf8("ml-kem-768"), utf8("/chain"));
  return hkdfExpand(ck, utf8("strata/v1/"), utf8("ml-kem-768"), utf8("/message"));
}
// params: [[name, "uint"|"bytes", value]], encoded in name order.
function encodeParams(params) {
  const sorted = [...params].sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])));
  const parts = [u32(sorted.length)];
  for (const [name, type, value] of sorted) {
    parts.push(lp(utf8(name)));
    parts.push(type === "uint" ? cat(u8(1), u64(value)) : cat(u8(3), lp(value)));
  }
  return cat(...parts);
}
// A one-layer cascade (ML-KEM alone): crate docs, "Binding the layers together".
function aad(sender, receiver, timestamp, originalSize, params) {
  return cat(
    utf8("strata/v1/cascade-aad\0"), sender, receiver, u8(1), u64(timestamp), u64(originalSize), u32(1),
    lp(utf8("ML-KEM")), lp(utf8("strata-1")), encodeParams(params),
  );
}
const nonce = (counter) => cat(utf8("MLKM"), u64(counter));

// ---- commands ------------------------------------------------------------------

const commands = {
  hello: async () => ({ identityKey: hex(identity.publicKey.serialize()), installationId: hex(installationId) }),
  pin: async ({ identityKey }) => { pinned = Signal.PublicKey.deserialize(unhex(identityKey)); return {}; },

  "signal.bundle": async () => {
    const pre = Signal.PrivateKey.generate();
    const signed = Signal.PrivateKey.generate();
    const signedSig = identity.privateKey.sign(signed.getPublicKey().serialize());
    const kyber = Signal.KEMKeyPair.generate();
    const kyberSig = identity.privateKey.sign(kyber.getPublicKey().serialize());
    await preKeys.savePreKey(7, Signal.PreKeyRecord.new(7, pre.getPublicKey(), pre));
    await signedPreKeys.saveSignedPreKey(8, Signal.SignedPreKeyRecord.new(8, Date.now(), signed.getPublicKey(), signed, signedSig));
    await kyberPreKeys.saveKyberPreKey(9, Signal.KyberPreKeyRecord.new(9, Date.now(), kyber, kyberSig));
    return {
      registrationId, deviceId: 1,
      preKeyId: 7, preKey: hex(pre.getPublicKey().serialize()),
      signedPreKeyId: 8, signedPreKey: hex(signed.getPublicKey().serialize()), signedPreKeySignature: hex(signedSig),
      kyberPreKeyId: 9, kyberPreKey: hex(kyber.getPublicKey().serialize()), kyberPreKeySignature: hex(kyberSig),
      identityKey: hex(identity.publicKey.serialize()),
    };
  },
  "signal.process": async (b) => {
    const bundle = Signal.PreKeyBundle.new(
      b.registrationId, b.deviceId, b.preKeyId, b.preKey ? Signal.PublicKey.deserialize(unhex(b.preKey)) : null,
      b.signedPreKeyId, Signal.PublicKey.deserialize(unhex(b.signedPreKey)), unhex(b.signedPreKeySignature),
      Signal.PublicKey.deserialize(unhex(b.identityKey)),
      b.kyberPreKeyId, Signal.KEMPublicKey.deserialize(unhex(b.kyberPreKey)), unhex(b.kyberPreKeySignature),
    );
    await Signal.processPreKeyBundle(bundle, strataAddr, localAddr, sessions, identities);
    return {};
  },
  "signal.encrypt": async ({ plaintext }) => {
    const m = await Signal.signalEncrypt(unhex(plaintext), strataAddr, localAddr, sessions, identities);
    return { type: m.type(), body: hex(m.serialize()) };
  },
  "signal.decrypt": async ({ type, body }) => {
    const pt = type === 3
      ? await Signal.signalDecryptPreKey(Signal.PreKeySignalMessage.deserialize(unhex(body)), strataAddr, localAddr,
          sessions, identities, preKeys, signedPreKeys, kyberPreKeys)
      : await Signal.signalDecrypt(Signal.SignalMessage.deserialize(unhex(body)), strataAddr, localAddr, sessions, identities);
    return { plaintext: hex(pt) };
  },

  "mls.keyPackage": async () => {
    const keys = await mlsImpl.signature.keygen();
    const signature = identity.privateKey.sign(mlsBinding(installationId, keys.publicKey));
    const credential = {
      credentialType: "basic",
      identity: cat(u8(1), identity.publicKey.serialize(), installationId, signature),
    };
    const now = BigInt(Math.floor(Date.now() / 1000));
    const lifetime = { notBefore: now - 3600n, notAfter: now + 7n * 86400n };
    ownKeyPackage = await Mls.generateKeyPackageWithKey(
      credential, Mls.defaultCapabilities(), lifetime, [], { signKey: keys.signKey, publicKey: keys.publicKey }, mlsImpl,
    );
    const bytes = Mls.encodeMlsMessage({ keyPackage: ownKeyPackage.publicPackage, wireformat: "mls_key_package", version: "mls10" });
    return { keyPackage: hex(bytes) };
  },
  "mls.checkKeyPackage": async ({ keyPackage }) => {
    const [msg] = Mls.decodeMlsMessage(unhex(keyPackage), 0);
    if (msg.wireformat !== "mls_key_package") throw new Error("not a key package");
    const kp = msg.keyPackage;
    const signatures = (await verifyKeyPackage(kp, mlsImpl.signature))
      && (await verifyLeafNodeSignatureKeyPackage(kp.leafNode, mlsImpl.signature));
    const cred = parseStrataCredential(kp.leafNode.credential.identity);
    const binding = !!cred && !!pinned && same(cred.identityKey, pinned.serialize())
      && pinned.verify(mlsBinding(cred.installationId, kp.leafNode.signaturePublicKey), cred.signature);
    const { notBefore, notAfter } = kp.leafNode.lifetime;
    const now = BigInt(Math.floor(Date.now() / 1000));
    return {
      signatures, binding,
      lifetimeSecs: Number(notAfter - notBefore),
      current: notBefore <= now && now < notAfter,
      lastResort: kp.extensions.some((e) => e.extensionType === 10 || e.extensionType === "last_resort"),
    };
  },
  "mls.createGroupWith": async ({ keyPackage }) => {
    const [msg] = Mls.decodeMlsMessage(unhex(keyPackage), 0);
    if (msg.wireformat !== "mls_key_package") throw new Error("not a key package");
    if (!ownKeyPackage) await commands["mls.keyPackage"]();
    group = await Mls.createGroup(new Uint8Array(crypto.randomBytes(16)), ownKeyPackage.publicPackage,
      ownKeyPackage.privatePackage, [], mlsImpl);
    const result = await Mls.createCommit({ state: group, cipherSuite: mlsImpl }, {
      extraProposals: [{ proposalType: "add", add: { keyPackage: msg.keyPackage } }],
      ratchetTreeExtension: true,
    });
    group = result.newState;
    const welcome = Mls.encodeMlsMessage({ welcome: result.welcome, wireformat: "mls_welcome", version: "mls10" });
    return { welcome: hex(welcome), epoch: Number(group.groupContext.epoch) };
  },
  "mls.join": async ({ welcome }) => {
    const [msg] = Mls.decodeMlsMessage(unhex(welcome), 0);
    if (msg.wireformat !== "mls_welcome") throw new Error("not a welcome");
    group = await Mls.joinGroup(msg.welcome, ownKeyPackage.publicPackage, ownKeyPackage.privatePackage,
      Mls.emptyPskIndex, mlsImpl);
    return { epoch: Number(group.groupContext.epoch) };
  },
  "mls.encrypt": async ({ plaintext }) => {
    const r = await Mls.createApplicationMessage(group, unhex(plaintext), mlsImpl);
    group = r.newState;
    const bytes = Mls.encodeMlsMessage({ privateMessage: r.privateMessage, wireformat: "mls_private_message", version: "mls10" });
    return { message: hex(bytes), epoch: Number(group.groupContext.epoch) };
  },
  "mls.decrypt": async ({ message }) => {
    const [msg] = Mls.decodeMlsMessage(unhex(message), 0);
    if (msg.wireformat !== "mls_private_message") throw new Error("not a private message");
    const r = await Mls.processPrivateMessage(group, msg.privateMessage, Mls.emptyPskIndex, mlsImpl);
    group = r.newState;
    if (r.kind !== "applicationMessage") throw new Error("not an application message");
    return { plaintext: hex(r.message) };
  },

  "kem.key": async ({ keyId }) => {
    const [ek, dk] = kem.generateKeyPair();
    kemKeys.set(keyId, dk);
    const signature = identity.privateKey.sign(kemBinding(installationId, keyId, ek));
    return { installationId: hex(installationId), keyId, encapsulationKey: hex(ek), signature: hex(signature) };
  },
  // Opens the first message of a Strata sender's epoch addressed to us.
  "kem.open": async ({ sender, timestamp, originalSize, epoch, counter, keyId, kemCiphertext, ciphertext }) => {
    const dk = kemKeys.get(keyId);
    if (!dk) throw new Error("unknown key id");
    const ct = unhex(kemCiphertext);
    const ss = kem.decap(ct, dk);
    const ck0 = kemEpoch(ss, unhex(sender), installationId, epoch, keyId, ct);
    const mk = kemMessageKey(ck0, counter);
    const params = [["counter", "uint", counter], ["epoch", "uint", epoch], ["kemCiphertext", "bytes", ct], ["kemKeyId", "uint", keyId]];
    const body = unhex(ciphertext);
    const d = crypto.createDecipheriv("aes-256-gcm", mk, nonce(counter));
    d.setAAD(aad(unhex(sender), installationId, timestamp, originalSize, params));
    d.setAuthTag(body.slice(body.length - 16));
    const pt = Buffer.concat([d.update(body.slice(0, body.length - 16)), d.final()]);
    return { plaintext: hex(pt) };
  },
  // Seals the first message of a new epoch to Strata's signed key.
  "kem.seal": async ({ receiver, timestamp, epoch, key, plaintext }) => {
    const ek = unhex(key.encapsulationKey);
    if (!pinned || !pinned.verify(kemBinding(unhex(key.installationId), key.keyId, ek), unhex(key.signature))) {
      throw new Error("ML-KEM key not bound to the pinned identity");
    }
    const [ct, ss] = kem.encap(ek);
    const ck0 = kemEpoch(ss, installationId, unhex(receiver), epoch, key.keyId, ct);
    const mk = kemMessageKey(ck0, 0);
    const pt = unhex(plaintext);
    const params = [["counter", "uint", 0], ["epoch", "uint", epoch], ["kemCiphertext", "bytes", ct], ["kemKeyId", "uint", key.keyId]];
    const c = crypto.createCipheriv("aes-256-gcm", mk, nonce(0));
    c.setAAD(aad(installationId, unhex(receiver), timestamp, pt.length, params));
    const body = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
    return { ciphertext: hex(body), kemCiphertext: hex(ct) };
  },
};

const rl = readline.createInterface({ input: process.stdin, terminal: false });
for await (const line of rl) {
  if (!line.trim()) continue;
  let answer;
  try {
    const { cmd, ...args } = JSON.parse(line);
    const handler = commands[cmd];
    if (!handler) throw new Error(`unknown command ${cmd}`);
    answer = { ok: true, ...(await handler(args)) };
  } catch (e) {
    answer = { ok: false, error: String(e && e.stack ? e.stack : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
