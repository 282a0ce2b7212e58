// An unmodified js-libp2p 2.x + @chainsafe/libp2p-gossipsub 14 node speaking Waku relay
// (/vac/waku/relay/2.0.0, StrictNoSign, sha256(data) message id, WakuMessage from @waku/proto), for
// crates/transport-libp2p/tests/interop_js.rs. Recipe and settings: shared/spec/libp2p-waku-relay.md §4.1.
//
// Usage: node waku-relay-peer.mjs [--dial <multiaddr>] --pubsub <topic> --publish-topic <content topic>
//          [--publish-text <text>] [--bad 1 [--link-topic <content topic>]] [--timeout-ms 30000]
// Prints one JSON object per line on stdout:
//   {"ev":"listening","peerId":...,"addrs":[...]}   after start
//   {"ev":"mesh","subscribers":n}      once the dialled peer subscribed to the pubsub topic
//   {"ev":"message","contentTopic":...,"payloadHex":...,"version":...,"timestamp":"<ns>","metaHex":...,
//    "ephemeral":...,"idOk":bool}      for every WakuMessage received (idOk: gossipsub id == sha256(data))
//   {"ev":"published","kind":"bad-bytes"|"empty-payload"|"bad-link-frames"|"valid"} after each publish
// Exits when stdin closes or after --timeout-ms.

import { args, out, hex, stopOnStdinEnd } from './line-peer.mjs'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import { sha256 } from '@noble/hashes/sha256'
import { proto_message } from '@waku/proto'

const PUBSUB = args.pubsub ?? '/waku/2/rs/42/0'
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const wakuRelay = (components) => {
  const ps = gossipsub({
    globalSignaturePolicy: 'StrictNoSign',
    msgIdFn: (m) => sha256(m.data),
    fallbackToFloodsub: false,
    allowPublishToZeroTopicPeers: false,
    maxInboundDataLength: 1 << 20,
    D: 6, Dlo: 4, Dhi: 8
  })(components)
  ps.multicodecs = ['/vac/waku/relay/2.0.0']
  return ps
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping(), pubsub: wakuRelay }
})
const relay = node.services.pubsub

// Waku relay validation, as js-waku does it: the WakuMessage must decode and carry a content topic and a payload.
relay.topicValidators.set(PUBSUB, (_peer, msg) => {
  try {
    const m = proto_message.WakuMessage.decode(msg.data)
    return m.contentTopic && m.payload && m.payload.length > 0 ? 'accept' : 'reject'
  } catch {
    return 'reject'
  }
})
relay.addEventListener('gossipsub:message', (e) => {
  const { msgId, msg } = e.detail
  const m = proto_message.WakuMessage.decode(msg.data)
  out({
    ev: 'message',
    contentTopic: m.contentTopic,
    payloadHex: hex(m.payload),
    version: m.version ?? null,
    timestamp: m.timestamp === undefined ? null : m.timestamp.toString(),
    metaHex: hex(m.meta),
    ephemeral: m.ephemeral ?? null,
    // gossipsub 14 reports the id as the base64 string of the raw id bytes.
    idOk: Buffer.from(msgId, 'base64').equals(Buffer.from(sha256(msg.data)))
  })
})
relay.subscribe(PUBSUB)
out({ ev: 'listening', peerId: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })

stopOnStdinEnd(node)

// Without --dial, wait for the Rust node to dial us.
if (args.dial) await node.dial(multiaddr(args.dial))
// A subscriber is not enough: gossipsub 14 silently drops an RPC to a peer whose outbound stream is not open yet
// (`sendRpc`: "no open stream"), and that stream opens only after identify. Wait for both.
const ready = () => relay.getSubscribers(PUBSUB).some((p) => relay.streamsOutbound.has(p.toString()))
while (!ready()) await sleep(20)
out({ ev: 'mesh', subscribers: relay.getSubscribers(PUBSUB).length })

const now = () => BigInt(Date.now()) * 1_000_000n
if (args.bad === '1') {
  // Bad input first: not a protobuf at all, then a WakuMessage with an empty payload (relays reject both).
  await relay.publish(PUBSUB, new Uint8Array([0xff, 0xff, 0xff, 0x01]))
  out({ ev: 'published', kind: 'bad-bytes' })
  await relay.publish(PUBSUB, proto_message.WakuMessage.encode({
    payload: new Uint8Array(0), contentTopic: args['publish-topic'], version: 0, timestamp: now()
  }))
  out({ ev: 'published', kind: 'empty-payload' })
  if (args['link-topic']) {
    // Valid Waku messages on the Strata node's own installation topic whose link header is garbage.
    for (const meta of [new Uint8Array([1, 2, 3]), new Uint8Array(26).fill(0xee)]) {
      await relay.publish(PUBSUB, proto_message.WakuMessage.encode({
        payload: new Uint8Array([9, 9, 9]), contentTopic: args['link-topic'], version: 0, timestamp: now(), meta
      }))
    }
    out({ ev: 'published', kind: 'bad-link-frames' })
  }
}
if (args['publish-topic']) {
  await relay.publish(PUBSUB, proto_message.WakuMessage.encode({
    payload: new TextEncoder().encode(args['publish-text'] ?? 'hello from js-libp2p'),
    contentTopic: args['publish-topic'],
    version: 0,
    timestamp: now(),
    meta: new TextEncoder().encode('js-meta'),
    ephemeral: false
  }))
  out({ ev: 'published', kind: 'valid' })
}
