// What every browser script shares: playwright-core from xtask's node_modules, the environment
// xtask sets (QWGLM_NODE_MODULES, QWGLM_DIST; optional QWGLM_MODELS, QWGLM_ARTIFACTS,
// QWGLM_TEST_TIMEOUT_S), the SmolLM2 reference fixture, timestamped logging, PASS/FAIL checks and
// the extension id, and Chromium launched with the extension.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const { chromium } = createRequire(join(process.env.QWGLM_NODE_MODULES, 'x.js'))('playwright-core');
export const dist = process.env.QWGLM_DIST;
export const modelsDir = process.env.QWGLM_MODELS ?? join(homedir(), '.cache/qwglm/models');
export const artifacts = process.env.QWGLM_ARTIFACTS ?? 'target/browser-test';
export const timeoutMs = Number(process.env.QWGLM_TEST_TIMEOUT_S ?? 900) * 1000;
export const fixture = JSON.parse(readFileSync('tests/fixtures/real/smollm2-135m-instruct-q4_1.json', 'utf8'));

export const log = (...args) => console.log(`[${(performance.now() / 1000).toFixed(1)}s]`, ...args);

// Records each check in `results`; a failed check throws, ending the script's scenario.
export function checker() {
  const results = [];
  const check = (name, ok, detail = '') => {
    results.push({ name, ok });
    log(`${ok ? 'PASS' : 'FAIL'}: ${name}${detail ? ` (${detail})` : ''}`);
    if (!ok) throw new Error(`${name} ${detail}`);
  };
  return { results, check };
}

// The extension id follows from the manifest key: first 128 bits of sha256(key), hex digits as a-p.
export function extensionId(manifest) {
  const hex = createHash('sha256').update(Buffer.from(manifest.key, 'base64')).digest('hex').slice(0, 32);
  return [...hex].map((c) => String.fromCharCode(97 + parseInt(c, 16))).join('');
}

// Chromium with the built extension loaded, in a persistent profile (the working flags of
// ../shared/design/browser-testing.md). `webgpu`: --enable-unsafe-webgpu (SwiftShader without a
// GPU); `headless: false` opens a window (and keeps the session bus); `noSandbox`: tests pass
// true, the launchers only when running as root; `extraArgs`: more switches (net-log, features).
export function launchWithExtension(profile, { webgpu = false, headless = true, noSandbox = true, extraArgs = [] } = {}) {
  return chromium.launchPersistentContext(profile, {
    executablePath: process.env.QWGLM_CHROMIUM,
    headless,
    ignoreDefaultArgs: true,
    args: [
      ...(headless ? ['--headless=new'] : []), ...(noSandbox ? ['--no-sandbox'] : []),
      '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--user-data-dir=${profile}`, '--remote-debugging-pipe', ...extraArgs, ...(webgpu ? ['--enable-unsafe-webgpu'] : []),
      `--disable-extensions-except=${dist}`, `--load-extension=${dist}`, 'about:blank',
    ],
    env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: headless ? 'disabled:' : (process.env.DBUS_SESSION_BUS_ADDRESS ?? 'disabled:') },
  });
}
