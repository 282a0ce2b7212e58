// The PeerJS side of Strata's interop tests, shared by Node (peerjs-peer.cjs)
// and headless Chromium (peerjs-browser.cjs). Plain script: no imports, so
// the browser can load it with a <script> tag.
//
// `echo(peer, emit)` answers every connection by echoing each message back.
// `connect(peer, emit, target, serialization, reliable)` opens a connection,
// sends the payload set for the serialization, checks every echo, closes.
// Events go to `emit(name, fields)`.
(function (root) {
  'use strict';

  const pattern = (n, seed) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) % 251);
  const bytesOf = (d) => (d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  const utf8 = (d) => new TextDecoder().decode(bytesOf(d));
  const fail = (what) => { throw new Error(what); };
  // Canonical JSON with sorted keys, for deep comparison.
  const canon = (v) => JSON.stringify(v, (k, x) => (x && typeof x === 'object' && !Array.isArray(x)
    ? Object.fromEntries(Object.keys(x).sort().map((key) => [key, x[key]])) : x));
  const sameValue = (expected) => (d) => canon(d) === canon(expected) || fail(`value ${canon(d)} != ${canon(expected)}`);
  const sameText = (expected) => (d) => {
    const got = typeof d === 'string' ? d : utf8(d);
    return got === expected || fail(`text ${JSON.stringify(got)} != ${JSON.stringify(expected)}`);
  };
  const sameBytes = (expected) => (d) => {
    const got = bytesOf(d);
    if (got.length !== expected.length) fail(`${got.length} bytes != ${expected.length}`);
    for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) fail(`byte ${i} differs`);
    return true;
  };

  // What each serialization sends, and how its echo comes back through a
  // Strata node or a PeerJS echo. Strata hands frames over as bytes: a value
  // PeerJS packed as an object reaches it as JSON text, so its echo arrives as
  // that text's bytes; a string arrives as its UTF-8.
  function cases(serialization) {
    const object = { hello: 'strata', n: [1, 2, { b: 'ü' }], s: 'héllo' };
    if (serialization === 'json') return [{ send: object, check: sameValue(object) }];
    const small = pattern(1001, 3);
    if (serialization === 'raw') {
      return [{ send: 'raw-string-ü', check: sameText('raw-string-ü') }, { send: small, check: sameBytes(small) }];
    }
    const blob = pattern(100000, 7); // > 16 300 B: chunked both ways
    const objectBack = (d) => sameValue(object)(d instanceof ArrayBuffer ? JSON.parse(utf8(d)) : d);
    return [
      { send: object, check: objectBack },
      { send: 'héllo', check: sameText('héllo') },
      { send: small, check: sameBytes(small) },
      { send: blob, check: sameBytes(blob) },
    ];
  }

  function echo(peer, emit) {
    peer.on('open', (id) => emit('open', { id }));
    peer.on('error', (e) => emit('peer-error', { type: e.type, message: e.message }));
    peer.on('connection', (conn) => {
      conn.on('open', () => emit('connection', {
        peer: conn.peer, serialization: conn.serialization, reliable: conn.reliable, label: conn.label,
        connectionId: conn.connectionId, metadata: conn.metadata === undefined ? null : conn.metadata,
      }));
      conn.on('data', (data) => conn.send(data));
      conn.on('close', () => emit('close', { peer: conn.peer }));
      conn.on('error', (e) => emit('conn-error', { type: e.type, message: e.message }));
    });
  }

  // Resolves once every echo matched and the connection closed.
  function connect(peer, emit, target, serialization, reliable) {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const conn = peer.connect(target, { serialization, reliable, metadata: { from: 'peerjs' } });
      conn.on('error', (e) => reject(new Error(`connection error ${e.type}: ${e.message}`)));
      peer.on('error', (e) => {
        // PeerJS handles a CANDIDATE concurrently with the ANSWER before it,
        // so addIceCandidate can run before setRemoteDescription finished and
        // throw; PeerJS reports that as a Peer-level 'webrtc' error and drops
        // the candidate, but ICE still succeeds (peer-reflexive). Not fatal.
        if (e.type === 'webrtc') emit('peer-warning', { type: e.type, message: String(e.message) });
        else reject(new Error(`peer error ${e.type}: ${e.message}`));
      });
      conn.on('open', async () => {
        emit('connected', { serialization, ms: performance.now() - started });
        const pending = [];
        conn.on('data', (data) => {
          const next = pending.shift();
          if (!next) return reject(new Error('unexpected echo'));
          try { next.check(data); next.done(); } catch (e) { reject(e); }
        });
        for (const c of cases(serialization)) {
          await new Promise((done) => { pending.push({ check: c.check, done }); conn.send(c.send); });
        }
        conn.on('close', () => resolve());
        conn.close();
      });
    });
  }

  const api = { cases, echo, connect };
  if (typeof module !== 'undefined' && module.exports) module.exports = api;
  else root.peerjsProbe = api;
})(typeof globalThis !== 'undefined' ? globalThis : this);
