// An unmodified js-waku relay node (@waku/sdk 0.0.27 + @waku/relay 0.0.14 + @waku/core 0.0.31, on libp2p 1.9.4) for
// crates/transport-libp2p/tests/interop_js.rs; scripts/setup installs it from this folder's lockfile.
// Recipe: shared/spec/libp2p-waku-relay.md §4.2 (cluster 42, shard 0, TCP + yamux instead of the SDK's
// websockets + mplex defaults).
//
// Usage: node waku-sdk-peer.mjs [--dial <multiaddr>] --subscribe-topic <content topic> --publish-topic <content topic>
//          [--timeout-ms 30000]
// Prints JSON lines: listening {peerId, addrs}, mesh (waitForRemotePeer(Relay) resolved),
//   message {contentTopic, payloadHex, timestampMs, version, ephemeral, metaHex}, published {recipients}.
// Exits when stdin closes or after --timeout-ms.

import { args, out, hex, stopOnStdinEnd } from '../../../../tests/interop/line-peer.mjs'
import { createRelayNode } from '@waku/sdk/relay'
import { createEncoder, createDecoder, waitForRemotePeer } from '@waku/sdk'
import { Protocols } from '@waku/interfaces'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@chainsafe/libp2p-yamux'
import { multiaddr } from '@multiformats/multiaddr'

const shardInfo = { clusterId: 42, shard: 0 }

const node = await createRelayNode({
  networkConfig: { clusterId: 42, shards: [0] },
  libp2p: {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    streamMuxers: [yamux()],
    hideWebSocketInfo: true
  }
})
await node.start()
out({ ev: 'listening', peerId: node.libp2p.peerId.toString(), addrs: node.libp2p.getMultiaddrs().map(String) })

stopOnStdinEnd(node)

await node.relay.subscribeWithUnsubscribe([createDecoder(args['subscribe-topic'], shardInfo)], (m) => {
  out({
    ev: 'message',
    contentTopic: m.contentTopic,
    payloadHex: hex(m.payload),
    timestampMs: m.timestamp ? m.timestamp.getTime() : null,
    version: m.version ?? null,
    ephemeral: m.ephemeral ?? null,
    metaHex: hex(m.meta)
  })
})

// Without --dial, wait for the Rust node to dial us.
if (args.dial) await node.dial(multiaddr(args.dial))
await waitForRemotePeer(node, [Protocols.Relay], 20000)
// As with plain gossipsub: an RPC to a peer whose outbound stream is not open yet is silently dropped.
const gs = node.libp2p.services.pubsub
const PUBSUB = '/waku/2/rs/42/0'
while (!gs.getSubscribers(PUBSUB).some((p) => gs.streamsOutbound.has(p.toString()))) {
  await new Promise((resolve) => setTimeout(resolve, 20))
}
out({ ev: 'mesh' })

const sent = await node.relay.send(createEncoder({ contentTopic: args['publish-topic'], pubsubTopicShardInfo: shardInfo }), {
  payload: new TextEncoder().encode('hello from js-waku')
})
out({ ev: 'published', recipients: sent.successes.length, failures: sent.failures.map((f) => String(f.error)) })
