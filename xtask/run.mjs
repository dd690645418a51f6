// `cargo xtask run`: the product. Serves the cached default model (SmolLM2-135M-Instruct from
// scripts/fetch-models.sh) from a local Hub-layout server, starts Chromium with the built
// extension (dist/) and a persistent profile, downloads the model into the extension's IndexedDB
// through the options page (skipped when it is already there), then opens the chat.
//
// Headless (QWGLM_HEADLESS=1): asks QWGLM_PROMPT in the real popup page, prints the answer to
// stdout as it streams, and exits 0 when it is done. Headed: leaves the chat open until the
// browser window is closed. Progress goes to stderr.
//
// Environment (set by xtask): QWGLM_NODE_MODULES, QWGLM_CHROMIUM, QWGLM_DIST, QWGLM_PROFILE,
// QWGLM_HEADLESS; optional QWGLM_PROMPT, QWGLM_BACKEND (auto|webgpu|cpu|simulator; headless
// default: cpu), QWGLM_MODELS.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startHub } from '../tests/browser/hub.mjs';
import { dist, extensionId, modelsDir, launchWithExtension } from '../tests/browser/harness.mjs';

const profile = process.env.QWGLM_PROFILE;
const headless = process.env.QWGLM_HEADLESS !== '0';
const backend = process.env.QWGLM_BACKEND;
const prompt = process.env.QWGLM_PROMPT ?? (headless ? 'What is the capital of France? Answer in one sentence.' : '');
const MODEL_ID = 'smollm2-135m-instruct-q4_1';
const TIMEOUT_MS = 15 * 60 * 1000;

const say = (...args) => console.error('qwglm:', ...args);

// Identifies a build of dist/ (its files' names and contents; `dist` rewrites them all).
function distStamp() {
  const hash = createHash('sha256');
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const info = statSync(path);
      if (info.isDirectory()) walk(path); else hash.update(name).update(readFileSync(path));
    }
  };
  walk(dist);
  return hash.digest('hex');
}

async function main() {
  const id = extensionId(JSON.parse(readFileSync(join(dist, 'manifest.json'), 'utf8')));
  // A profile that ran an older build keeps that build's service-worker scripts (the manifest's
  // version did not change), which then fail to link against the new wasm. So the profile lasts
  // as long as the build; after a rebuild it starts fresh (the model download from the local
  // server takes seconds).
  const stampFile = join(profile, 'qwglm-dist-stamp');
  const stamp = distStamp();
  if (existsSync(profile) && (!existsSync(stampFile) || readFileSync(stampFile, 'utf8') !== stamp)) {
    say('the extension was rebuilt since the profile last ran it: starting with a fresh profile');
    rmSync(profile, { recursive: true, force: true });
  }
  const hub = await startHub({ dir: modelsDir });
  mkdirSync(profile, { recursive: true });
  // A previous run killed mid-way leaves Chromium's profile lock behind.
  for (const lock of ['SingletonLock', 'SingletonSocket', 'SingletonCookie']) rmSync(join(profile, lock), { force: true });
  // Headless Chromium only has SwiftShader for WebGPU (minutes per answer), so headless runs
  // leave WebGPU off and, unless another backend is asked for, choose the CPU reference device:
  // Auto without WebGPU would take the GPU simulator, slower still.
  const webgpu = backend === 'webgpu' || (!headless && backend !== 'cpu' && backend !== 'simulator');
  const chosenBackend = backend ?? (headless ? 'cpu' : undefined);
  const context = await launchWithExtension(profile, { webgpu, headless, noSandbox: process.getuid?.() === 0 });
  try {
    say(`extension ${id}, models served from ${hub.url}, profile ${profile}`);
    writeFileSync(stampFile, stamp);
    // Settings: download from the local server; the backend if one was asked for.
    const options = await context.newPage();
    await options.goto(`chrome-extension://${id}/options.html`);
    await options.evaluate(async ({ hubUrl, backend }) => {
      const { settings = {} } = await chrome.storage.local.get('settings');
      settings.hub_url = hubUrl;
      if (backend) settings.backend = backend;
      await chrome.storage.local.set({ settings });
    }, { hubUrl: hub.url, backend: chosenBackend });
    await options.reload();
    const row = options.locator(`#models tr[data-model="${MODEL_ID}"]`);
    // Connected to the engine and the store listed: the row is ready or offers its download.
    const known = `#models tr[data-model="${MODEL_ID}"][data-state=ready], #models tr[data-model="${MODEL_ID}"] button.download:not([disabled])`;
    try {
      await options.waitForSelector(known, { timeout: 120000 });
    } catch {
      throw new Error(`the options page did not reach the engine: ${(await options.textContent('#notice').catch(() => '')) || 'no message'}`);
    }
    await options.waitForTimeout(500); // the store's list follows the connection
    if ((await row.getAttribute('data-state')) === 'ready') {
      say('the model is already in the extension\'s store');
    } else {
      say('downloading SmolLM2-135M-Instruct into the extension (IndexedDB)…');
      await row.locator('button.download').click();
      const started = Date.now();
      let last = '';
      while ((await row.getAttribute('data-state')) !== 'ready') {
        if (await row.locator('.row-error').count()) throw new Error(`download failed: ${await row.locator('.row-error').textContent()}`);
        if (Date.now() - started > TIMEOUT_MS) throw new Error('the download did not finish');
        const detail = (await row.locator('.detail').textContent().catch(() => '')).trim();
        if (detail && detail !== last) { say('download', detail); last = detail; }
        await options.waitForTimeout(500);
      }
      say(`downloaded and verified in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
    await options.close();

    // The chat: the extension's popup page (a toolbar popup cannot be opened by automation).
    const popup = await context.newPage();
    await popup.goto(`chrome-extension://${id}/popup.html`);
    await popup.bringToFront();
    await popup.waitForSelector('#send:not([disabled]), #first-run', { timeout: 120000 });
    if (await popup.locator('#first-run').count()) throw new Error('the popup says no model is ready');
    if (prompt) {
      say(`asking: ${prompt}`);
      await popup.click('#new-chat');
      await popup.fill('#prompt', prompt);
      await popup.click('#send');
      const started = Date.now();
      let printed = '';
      while (true) {
        const state = await popup.getAttribute('#last-answer', 'data-state');
        const text = (await popup.getAttribute('#last-answer', 'data-text')) ?? '';
        if (text.startsWith(printed) && text.length > printed.length) {
          process.stdout.write(text.slice(printed.length));
          printed = text;
        }
        if (state === 'done') break;
        if (await popup.locator('.status.error').count()) throw new Error((await popup.textContent('#status-text')).trim());
        if (Date.now() - started > TIMEOUT_MS) throw new Error('no answer in time');
        await popup.waitForTimeout(150);
      }
      process.stdout.write('\n');
      say(`${(await popup.textContent('#status-text')).trim()} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    }
    if (!headless) {
      say('the chat is open in the browser; close the window to quit');
      await new Promise((resolve) => context.on('close', resolve));
    }
  } finally {
    await context.close().catch(() => {});
    await hub.close();
  }
}

main().then(() => process.exit(0), (error) => { say('error:', error.message ?? error); process.exit(1); });
