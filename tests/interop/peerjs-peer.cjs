// An unmodified peerjs 1.5.5 client in Node (node-datachannel polyfill).
// Prints one JSON line per event.
//
//   node peerjs-peer.cjs echo    <port> <id|->
//       Registers (an id of "-" asks the broker's GET /peerjs/id) and echoes
//       every message back. Exits when stdin closes.
//   node peerjs-peer.cjs connect <port> <id> <target> <serialization> <reliable>
//       Connects, sends the payload set, checks each echo, closes; prints
//       {"event":"ok"} and exits 0 when all matched.
'use strict';
const { Peer, cleanup } = require('./peerjs-env.cjs');
const probe = require('./peerjs-probe.js');

const [mode, port, id, target, serialization, reliable] = process.argv.slice(2);
const emit = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));
const fail = (reason) => {
  emit('fail', { reason: String(reason && reason.stack ? reason.stack : reason) });
  cleanup();
  process.exit(1);
};
// peerjs has no connect timeout: bound the whole run.
setTimeout(() => fail('timed out'), 60000).unref();

const options = { host: '127.0.0.1', port: Number(port), path: '/', key: 'peerjs', secure: false,
  config: { iceServers: [] }, debug: 0 };
const peer = id === '-' ? new Peer(options) : new Peer(id, options);

if (mode === 'echo') {
  probe.echo(peer, emit);
  process.stdin.on('end', () => { cleanup(); process.exit(0); });
  process.stdin.resume();
} else if (mode === 'connect') {
  peer.on('open', () => {
    probe.connect(peer, emit, target, serialization, reliable === 'true').then(() => {
      emit('ok', { serialization, reliable });
      cleanup();
      process.exit(0);
    }, fail);
  });
} else {
  fail(`unknown mode ${mode}`);
}
