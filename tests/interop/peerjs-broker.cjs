// The reference PeerJS broker (`peer` 1.0.2), unmodified, on 127.0.0.1 and a
// free port. Prints {"event":"listening","port":N}, then one
// {"event":"relay",...} line per client frame. Exits when stdin closes.
'use strict';
const { PeerServer } = require('peer');
const server = PeerServer({ host: '127.0.0.1', port: 0, path: '/', key: 'peerjs', alive_timeout: 60000 }, (srv) => {
  console.log(JSON.stringify({ event: 'listening', port: srv.address().port }));
});
server.on('message', (client, message) => {
  console.log(JSON.stringify({ event: 'relay', src: client.getId(), type: message.type, dst: message.dst }));
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
