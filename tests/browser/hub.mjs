// A local Hugging Face Hub-layout server (/{org}/{repo}/resolve/{rev}/{file}) for the browser
// tests: serves files from a directory with HTTP Range support and the Hub's LFS hash header
// (X-Linked-Etag), records every request, and injects scripted faults.
//
// Faults are consumed in order, one per request of a file, from `faults[file]`:
//   '503'            answer 503 Service Unavailable
//   'drop:F'         send a fraction F of the requested bytes, then close the connection
//   'stall:F'        send a fraction F, then send nothing more (the socket stays open)
//   'corrupt'        serve the request with one byte flipped (in the middle of what is sent)
//   'ok'             serve normally
// Requests beyond the script are served normally.

import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

export function sha256File(path) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path).on('data', (d) => hash.update(d)).on('end', () => resolve(hash.digest('hex'))).on('error', reject);
  });
}

export async function startHub({ dir, faults = {} }) {
  const requests = [];
  const script = Object.fromEntries(Object.entries(faults).map(([k, v]) => [k, [...v]]));
  const hashes = {};
  const sockets = new Set();
  const server = createServer(async (req, res) => {
    const entry = { url: req.url, method: req.method, range: req.headers.range ?? null, start: 0, status: 0, sent: 0, fault: null, time: Date.now() };
    requests.push(entry);
    const match = req.url.match(/^\/([^/]+\/[^/]+)\/resolve\/[^/]+\/([^/?]+)$/);
    const file = match?.[2];
    const path = file && join(dir, file);
    let size;
    try { size = path && statSync(path).size; } catch { size = undefined; }
    if (!size) { entry.status = 404; res.writeHead(404).end('not found'); return; }
    hashes[file] ??= await sha256File(path);
    const fault = script[file]?.shift() ?? 'ok';
    entry.fault = fault;
    if (fault === '503') { entry.status = 503; res.writeHead(503, { 'Retry-After': '0' }).end('busy'); return; }

    let start = 0;
    let end = size - 1;
    const range = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
    if (range) {
      start = Number(range[1]);
      if (range[2]) end = Math.min(Number(range[2]), size - 1);
      if (start >= size) { entry.status = 416; res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end(); return; }
    }
    entry.start = start;
    const length = end - start + 1;
    const headers = {
      'Content-Length': length, 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes',
      'X-Linked-Etag': `"${hashes[file]}"`, 'X-Linked-Size': String(size),
    };
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    entry.status = range ? 206 : 200;
    res.writeHead(entry.status, headers);

    const [kind, fraction] = fault.split(':');
    const limit = kind === 'drop' || kind === 'stall' ? Math.floor(length * Number(fraction)) : length;
    const flipAt = kind === 'corrupt' ? Math.floor(length / 2) : -1;
    const stream = createReadStream(path, { start, end: start + limit - 1 });
    let offset = 0;
    stream.on('data', (data) => {
      if (flipAt >= offset && flipAt < offset + data.length) {
        data = Buffer.from(data);
        data[flipAt - offset] ^= 0xff;
      }
      offset += data.length;
      entry.sent += data.length;
      if (!res.write(data)) { stream.pause(); res.once('drain', () => stream.resume()); }
    });
    stream.on('end', () => {
      if (kind === 'drop') {
        // Everything written is flushed, then the connection ends short of Content-Length.
        res.socket?.end();
      } else if (kind === 'stall') {
        // Nothing more: the client must give up on its own.
      } else {
        res.end();
      }
    });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  const close = () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(resolve); });
  return { url, requests, hashes, close };
}
