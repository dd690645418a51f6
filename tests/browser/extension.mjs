// Browser end-to-end test of the model store, the downloader and the history (issue 3):
//  1. fresh profile → the options page downloads SmolLM2 from a local Hub-layout server that
//     injects a 503, a dropped connection, a stalled response and one corrupted byte; the
//     download reaches 100%, no byte that was received is requested again (from the server's
//     request log), and the corrupted file is fetched again and only then marked ready;
//  2. the popup answers the reference prompt with the transformers reference greedy ids
//     (tests/fixtures/real/smollm2-135m-instruct-q4_1.json), with no request to the server;
//  3. quota exhaustion (CDP Storage.overrideQuotaForOrigin) → a clear message (screenshot);
//  4. browser restart with the server stopped and without WebGPU (no --enable-unsafe-webgpu):
//     the engine falls back by itself to the GPU simulator (said in the status line, screenshot
//     popup-no-webgpu.png), the model loads from IndexedDB and answers the same reference ids,
//     the earlier conversation is still listed and restorable;
//  5. a net-log of both sessions: during the first, http(s) requests only to the configured
//     host; during the second (chat only), none.
// Run by `cargo xtask test-browser` (same environment as chat.mjs).

import { mkdtempSync, readFileSync, mkdirSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHub } from './hub.mjs';
import { dist, modelsDir, artifacts, timeoutMs, fixture, log, extensionId, checker, launchWithExtension } from './harness.mjs';

const MODEL_ID = 'smollm2-135m-instruct-q4_1';
const FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const BIG_ID = 'qwen2.5-coder-0.5b-instruct-q4_k_m';

const { results, check } = checker();

function launch(profile, netlog, { webgpu = true } = {}) {
  const extraArgs = ['--disable-features=OptimizationHints,MediaRouter', `--log-net-log=${netlog}`, '--net-log-capture-mode=Default'];
  return launchWithExtension(profile, { webgpu, extraArgs });
}

// Every URL request the extension started (net-log URL_REQUEST_START_JOB events whose initiator
// is the extension's origin; Chromium's own background requests have no such initiator).
function extensionRequests(path, id) {
  const text = readFileSync(path, 'utf8').trim();
  let log;
  try { log = JSON.parse(text); } catch { log = JSON.parse(`${text.replace(/,?\s*$/, '')}]}`); }
  const start = log.constants.logEventTypes.URL_REQUEST_START_JOB;
  return log.events
    .filter((e) => e.type === start && e.params?.initiator === `chrome-extension://${id}` && /^https?:/.test(e.params.url))
    .map((e) => e.params.url);
}

// `whileStreaming(popup)` runs once, as soon as the answer has streamed its second token.
async function chat(popup, question, whileStreaming = null) {
  await popup.waitForSelector('#send:not([disabled])', { timeout: 60000 });
  await popup.fill('#prompt', question);
  await popup.click('#send');
  const started = Date.now();
  let lastStatus = '';
  while (true) {
    const state = await popup.getAttribute('#last-answer', 'data-state');
    const status = (await popup.textContent('#status-text')).trim();
    if (status !== lastStatus) { log('status:', status); lastStatus = status; }
    if (state === 'done') break;
    if (whileStreaming && (await popup.getAttribute('#last-answer', 'data-streamed-ids')).split(',').filter(Boolean).length >= 2) {
      const hook = whileStreaming;
      whileStreaming = null;
      await hook(popup);
    }
    if (/failed|Cannot|stopped|not |error/i.test(status) && !status.includes('·')) throw new Error(`engine error: ${status}`);
    if (Date.now() - started > timeoutMs) throw new Error(`no answer after ${timeoutMs / 1000} s`);
    await popup.waitForTimeout(500);
  }
  const ids = async (name) => (await popup.getAttribute('#last-answer', name)).split(',').filter(Boolean).map(Number);
  return { streamed: await ids('data-streamed-ids'), generated: await ids('data-generated-ids'), stopReason: await popup.getAttribute('#last-answer', 'data-stop-reason') };
}

async function main() {
  mkdirSync(artifacts, { recursive: true });
  const manifest = JSON.parse(readFileSync(join(dist, 'manifest.json'), 'utf8'));
  const id = extensionId(manifest);
  const size = statSync(join(modelsDir, FILE)).size;
  const hub = await startHub({ dir: modelsDir, faults: { [FILE]: ['503', 'drop:0.3', 'stall:0.3', 'corrupt'] } });
  const profile = mkdtempSync(join(tmpdir(), 'qwglm-profile-'));
  const netlog1 = join(artifacts, 'netlog-download.json');
  const netlog2 = join(artifacts, 'netlog-restart.json');
  log(`hub ${hub.url}, extension ${id}, profile ${profile}`);
  const system = fixture.messages.find((m) => m.role === 'system').content;
  const question = fixture.messages.find((m) => m.role === 'user').content;
  const expected = fixture.greedy_ids_until_eos;
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  let context = await launch(profile, netlog1);
  let hubClosed = false;
  try {
    // --- 1. download from the options page, through the faults ---
    const options = await context.newPage();
    options.on('console', (m) => { if (m.type() === 'error') log('options console:', m.text()); });
    await options.goto(`chrome-extension://${id}/options.html`);
    await options.waitForSelector(`#models tr[data-model="${MODEL_ID}"] button.download:not([disabled])`);
    await options.fill('#hub-url', hub.url);
    await options.fill('#system-prompt', system);
    await options.fill('#max-tokens', '16');
    await options.check(`#models tr[data-model="${MODEL_ID}"] input[type=radio]`);
    await options.click('#save');
    await options.waitForSelector('#notice:has-text("Saved")');
    const t0 = Date.now();
    await options.click(`#models tr[data-model="${MODEL_ID}"] button.download`);
    let shot = false;
    let lastDetail = '';
    while (true) {
      const row = options.locator(`#models tr[data-model="${MODEL_ID}"]`);
      const state = await row.getAttribute('data-state');
      const detail = (await row.locator('.detail').textContent()).trim();
      const error = await row.locator('.row-error').count() ? await row.locator('.row-error').textContent() : '';
      if (detail !== lastDetail) { log('download:', state, detail); lastDetail = detail; }
      if (!shot && state === 'downloading' && /[1-9]\d?%/.test(detail)) {
        await options.screenshot({ path: join(artifacts, 'options-downloading.png') });
        shot = true;
      }
      if (state === 'ready') break;
      if (error) throw new Error(`download failed: ${error}`);
      if (Date.now() - t0 > timeoutMs) throw new Error('download did not finish');
      await options.waitForTimeout(250);
    }
    const progress = options.locator(`#models tr[data-model="${MODEL_ID}"] progress`);
    check('download reaches 100% and is verified', (await progress.getAttribute('value')) === '100' && (await progress.getAttribute('data-done')) === String(size),
      `${await progress.getAttribute('data-done')} of ${size} bytes in ${(Date.now() - t0) / 1000} s`);
    await options.screenshot({ path: join(artifacts, 'options-ready.png') });

    // The request log: a 503, then requests resuming exactly where the previous one stopped
    // (no received byte asked for twice) until the corrupted byte fails verification, then one
    // full fetch that verifies.
    const fileRequests = hub.requests.filter((r) => r.url.endsWith(FILE));
    log('hub requests:', JSON.stringify(fileRequests.map(({ range, start, status, sent, fault }) => ({ range, start, status, sent, fault }))));
    const faults = fileRequests.map((r) => r.fault);
    check('faults injected in order', same(faults.slice(0, 4), ['503', 'drop:0.3', 'stall:0.3', 'corrupt']), faults.join(','));
    // Each resume asks for the first byte not stored: after everything received before a stall,
    // and after a drop at most what Chromium discarded unread when the response failed (the
    // extension never saw those bytes), never before the previous request's start.
    const firstPass = fileRequests.slice(1, 4);
    const [drop, stall, corrupt] = firstPass;
    const resumes = `${drop.start}+${drop.sent} → ${stall.start}+${stall.sent} → ${corrupt.start}+${corrupt.sent}`;
    check('resume after a drop keeps the stored bytes', drop.start === 0 && stall.start > drop.start && stall.start <= drop.start + drop.sent, resumes);
    check('resume after a stall starts exactly after the bytes received', corrupt.start === stall.start + stall.sent, resumes);
    check('first pass ends at the end of the file', corrupt.start + corrupt.sent === size, resumes);
    const refetch = fileRequests.slice(4);
    check('corrupted file fetched again in full, once', refetch.length === 1 && refetch[0].start === 0 && refetch[0].sent === size,
      refetch.map((r) => `${r.start}+${r.sent}`).join(', '));

    // --- 3. quota exhaustion: an origin quota just above what is used ---
    const cdp = await context.newCDPSession(options);
    const { usage } = await options.evaluate(() => navigator.storage.estimate());
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: `chrome-extension://${id}`, quotaSize: usage + 20e6 });
    await options.click(`#models tr[data-model="${BIG_ID}"] button.download`);
    const bigError = options.locator(`#models tr[data-model="${BIG_ID}"] .row-error`);
    await bigError.waitFor({ timeout: 60000 });
    const quotaText = await bigError.textContent();
    await options.screenshot({ path: join(artifacts, 'options-quota.png') });
    check('quota exhaustion gives a clear message', /not enough storage/i.test(quotaText), quotaText);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: `chrome-extension://${id}` });
    await options.close();

    // --- 2. chat from the stored model: reference ids, no request to the server ---
    const before = hub.requests.length;
    const popup = await context.newPage();
    popup.on('pageerror', (e) => log('popup error:', e.message));
    await popup.goto(`chrome-extension://${id}/popup.html`);
    const answer = await chat(popup, question, (p) => p.screenshot({ path: join(artifacts, 'popup-streaming.png') }));
    await popup.screenshot({ path: join(artifacts, 'popup-answer.png') });
    const backendLine = (await popup.textContent('#status-text')).trim();
    check('WebGPU (SwiftShader) is used and the status line says so', backendLine.includes('WebGPU'), backendLine);
    check('popup answer on WebGPU equals the reference greedy ids', same(answer.streamed, expected), `${answer.streamed}`);
    check('no server request during chat', hub.requests.length === before, `${hub.requests.length - before} requests`);
    await context.close();
    const urls1 = extensionRequests(netlog1, id);
    const foreign = urls1.filter((u) => !u.startsWith(`${hub.url}/`));
    check('the extension requested only the configured host', urls1.length > 0 && foreign.length === 0, `${urls1.length} requests, others: ${foreign.slice(0, 5).join(' ')}`);

    // --- 4. restart with the server stopped ---
    await hub.close();
    hubClosed = true;
    // Launched without --enable-unsafe-webgpu: no adapter, so the engine (backend left on Auto)
    // falls back by itself to the GPU simulator, the same WGSL kernels interpreted on the CPU.
    context = await launch(profile, netlog2, { webgpu: false });
    const popup2 = await context.newPage();
    popup2.on('pageerror', (e) => log('popup error:', e.message));
    // The engine runs in its own worker, so the popup answers during the simulator's prefill (one
    // pass of tens of seconds; chat.mjs checks the popup's responsiveness); the raised default
    // timeout only keeps this part robust on a heavily loaded machine.
    popup2.setDefaultTimeout(timeoutMs);
    await popup2.goto(`chrome-extension://${id}/popup.html`);
    await popup2.waitForSelector('#send:not([disabled])', { timeout: 60000 });
    const restored = await popup2.locator('.turn').allTextContents();
    check('conversation history survives the restart', restored[0] === question && restored.length === 2, JSON.stringify(restored));
    await popup2.click('#new-chat');
    // Mid-answer, the service worker is stopped (CDP ServiceWorker.stopAllWorkers): the answer
    // streams on (the popup talks to the offscreen document, which relays to the engine worker)
    // and completes.
    const swCdp = await context.newCDPSession(popup2);
    const workerStates = [];
    swCdp.on('ServiceWorker.workerVersionUpdated', ({ versions }) => versions.forEach((v) => workerStates.push(v.runningStatus)));
    await swCdp.send('ServiceWorker.enable');
    let stoppedWorkers = false;
    const { settings: savedSettings } = await popup2.evaluate(() => chrome.storage.local.get('settings'));
    check('the backend setting is Auto (no simulator chosen)', savedSettings.backend === 'auto', savedSettings.backend);
    const simStarted = Date.now();
    const again = await chat(popup2, question, async () => {
      await swCdp.send('ServiceWorker.stopAllWorkers');
      const deadline = Date.now() + 5000;
      while (!workerStates.includes('stopped') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      stoppedWorkers = workerStates.includes('stopped');
      log('service worker states mid-answer:', workerStates.join(','));
    });
    const simSeconds = (Date.now() - simStarted) / 1000;
    check('after the restart the stored model answers the reference ids on the GPU simulator', same(again.streamed, expected),
      `${again.streamed} in ${simSeconds.toFixed(1)} s`);
    check('the answer completed although the service worker was stopped mid-generation', stoppedWorkers && again.stopReason === 'stop_token'
      && same(again.generated, [...expected, fixture.config.eos_token_id]), `${again.stopReason} ${again.generated}`);
    const simLine = (await popup2.textContent('#status-text')).trim();
    const note = await popup2.locator('#backend-note').count() ? (await popup2.textContent('#backend-note')).trim() : '';
    await popup2.screenshot({ path: join(artifacts, 'popup-no-webgpu.png') });
    check('without a WebGPU adapter: GPU simulator fallback, said in the status line',
      simLine.includes('GPU simulator') && /WebGPU is not available/.test(note) && /GPU simulator runs the WebGPU kernels on the CPU/.test(note),
      `${simLine} | ${note}`);
    const shown = (await popup2.locator('.turn.assistant').last().textContent()) ?? '';
    check('the popup shows the whole answer', shown === fixture.greedy_text_until_eos, JSON.stringify(shown));
    const listed = await popup2.locator('#conversations option').count();
    check('both conversations are listed', listed === 2, `${listed} entries`);
    await context.close();
    const urls2 = extensionRequests(netlog2, id);
    check('no network request by the extension in the restarted chat session', urls2.length === 0, urls2.slice(0, 5).join(' '));
  } catch (error) {
    results.push({ name: error.message, ok: false });
    console.error('FAIL:', error.message);
    for (const page of context.pages()) {
      try { await page.screenshot({ path: join(artifacts, `failure-ext-${context.pages().indexOf(page)}.png`) }); } catch {}
    }
    try { await context.close(); } catch {}
  } finally {
    if (!hubClosed) await hub.close();
    rmSync(profile, { recursive: true, force: true });
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(`extension.mjs: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((error) => { console.error('FAIL:', error); process.exit(1); });
