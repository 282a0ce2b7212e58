// Makes Node look enough like a browser for unmodified peerjs 1.5.5:
// WebRTC from node-datachannel's polyfill, WebSocket from `ws`. Must run
// before `require('peerjs')`, which probes WebRTC support at load time.
'use strict';
const polyfill = require('node-datachannel/polyfill');
Object.assign(globalThis, {
  RTCPeerConnection: polyfill.RTCPeerConnection,
  RTCSessionDescription: polyfill.RTCSessionDescription,
  RTCIceCandidate: polyfill.RTCIceCandidate,
  WebSocket: require('ws'),
});
module.exports = { Peer: require('peerjs').Peer, cleanup: () => require('node-datachannel').cleanup() };
