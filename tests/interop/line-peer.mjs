// What the JS interop peers of crates/transport-libp2p/tests/interop_js.rs share (no npm packages, so the peers in
// their own npm folders import it too): `--name value` arguments, one JSON object per line on stdout, and a lifetime
// that ends when stdin closes or after --timeout-ms (default 30000; then a `timeout` line and exit code 3).
// Import it first: its polyfill must be in place before the libp2p packages run.

// Node 20 lacks Promise.withResolvers (Node >= 22); it-queue (via libp2p's peer store) calls it.
Promise.withResolvers ??= () => {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

export const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
export const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
export const hex = (u8) => (u8 ? Buffer.from(u8).toString('hex') : null)

// Stops `node` and exits when stdin closes (0) or after --timeout-ms (3).
export function stopOnStdinEnd (node) {
  const stop = async (code) => { try { await node.stop() } finally { process.exit(code) } }
  process.stdin.on('end', () => stop(0))
  process.stdin.resume()
  setTimeout(() => { out({ ev: 'timeout' }); stop(3) }, Number(args['timeout-ms'] ?? 30000)).unref()
}
