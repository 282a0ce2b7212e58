// Unmodified peerjs 1.5.5 inside Debian's headless Chromium, driven by
// playwright-core. Prints one JSON line per event, like peerjs-peer.cjs.
//
//   node peerjs-browser.cjs echo    <broker port> <id>
//   node peerjs-browser.cjs connect <broker port> <id> <target> <serialization>...
//
// Exits 2 with {"event":"unavailable"} when no Chromium is installed.
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const [mode, brokerPort, id, target, ...serializations] = process.argv.slice(2);
const emit = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));
const CHROMIUM = ['/usr/bin/chromium', '/usr/lib/chromium/chromium'].find((p) => fs.existsSync(p));
if (!CHROMIUM) {
  emit('unavailable', { reason: 'no Chromium at /usr/bin/chromium (apt-get install chromium)' });
  process.exit(2);
}
const { chromium } = require('playwright-core');

let browser;
const fail = async (reason) => {
  emit('fail', { reason: String(reason && reason.stack ? reason.stack : reason) });
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
};
setTimeout(() => fail('timed out'), 90000).unref();

// The page and its scripts, from a loopback origin of its own.
const files = {
  '/peerjs.min.js': require.resolve('peerjs/dist/peerjs.min.js'),
  '/peerjs-probe.js': path.join(__dirname, 'peerjs-probe.js'),
};
const page = '<!doctype html><meta charset="utf-8"><script src="/peerjs.min.js"></script>'
  + '<script src="/peerjs-probe.js"></script>';
const server = http.createServer((req, res) => {
  const file = files[req.url];
  if (file) { res.writeHead(200, { 'content-type': 'text/javascript' }); fs.createReadStream(file).pipe(res); }
  else { res.writeHead(200, { 'content-type': 'text/html' }); res.end(page); }
});

async function main() {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
      // Loopback candidates (a lo-only host needs them, with the media
      // permission below) and real addresses instead of mDNS names.
      '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
  emit('browser', { version: browser.version() });
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const tab = await context.newPage();
  await tab.exposeFunction('emitEvent', (event, fields) => emit(event, fields));
  await tab.goto(`http://127.0.0.1:${server.address().port}/`);
  const options = { host: '127.0.0.1', port: Number(brokerPort), path: '/', key: 'peerjs', secure: false,
    config: { iceServers: [] }, debug: 0 };
  await tab.evaluate(({ id, options }) => new Promise((resolve, reject) => {
    window.peer = new window.peerjs.Peer(id, options);
    window.emit = (event, fields = {}) => window.emitEvent(event, fields);
    window.peer.on('open', resolve);
    window.peer.on('error', (e) => reject(new Error(`${e.type}: ${e.message}`)));
  }), { id, options });
  if (mode === 'echo') {
    await tab.evaluate(() => { window.peerjsProbe.echo(window.peer, window.emit); window.emit('open', { id: window.peer.id }); });
    process.stdin.on('end', async () => { await browser.close(); process.exit(0); });
    process.stdin.resume();
    return;
  }
  for (const serialization of serializations) {
    await tab.evaluate(({ target, serialization }) =>
      window.peerjsProbe.connect(window.peer, window.emit, target, serialization, true), { target, serialization });
  }
  emit('ok', { serializations });
  await browser.close();
  process.exit(0);
}

main().catch(fail);
