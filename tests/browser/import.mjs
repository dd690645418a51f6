// Browser test of importing a local GGUF file on the options page (fresh profile, no server):
//  1. a truncated copy of the SmolLM2 GGUF is rejected with a visible message, nothing ready;
//  2. a file that is not GGUF at all is rejected before anything is stored;
//  3. the real file is stored, its sha256 shown (= sha256 of the file), the model is ready;
//  4. selected in the options, it answers the reference prompt in the popup with the
//     transformers greedy ids (CPU backend).
// Run by `cargo xtask test-browser` (same environment as chat.mjs).

import { mkdtempSync, openSync, readSync, closeSync, readFileSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256File } from './hub.mjs';
import { dist, modelsDir, artifacts, timeoutMs, fixture, log, extensionId, checker, launchWithExtension } from './harness.mjs';

const FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const LOCAL_ID = 'local-smollm2-135m-instruct.q4_1';

const { results, check } = checker();

async function importFile(options, path) {
  await options.setInputFiles('#import-file', path);
  await options.waitForSelector('#import-status[data-state=done], #import-status[data-state=failed]', { timeout: timeoutMs });
  return { state: await options.getAttribute('#import-status', 'data-state'), text: (await options.textContent('#import-status')).trim() };
}

async function main() {
  mkdirSync(artifacts, { recursive: true });
  const id = extensionId(JSON.parse(readFileSync(join(dist, 'manifest.json'), 'utf8')));
  const original = join(modelsDir, FILE);
  const size = statSync(original).size;
  const scratch = mkdtempSync(join(tmpdir(), 'qwglm-import-'));
  // The first 60% of the file: the header parses, the tensors run past the end.
  const truncated = join(scratch, 'SmolLM2-truncated.gguf');
  const head = Buffer.alloc(Math.floor(size * 0.6));
  const fd = openSync(original, 'r');
  readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  writeFileSync(truncated, head);
  const notGguf = join(scratch, 'notes.gguf');
  writeFileSync(notGguf, 'These are my notes, not a model.\n'.repeat(100));
  const profile = mkdtempSync(join(tmpdir(), 'qwglm-profile-'));
  const context = await launchWithExtension(profile);
  try {
    const options = await context.newPage();
    options.on('console', (m) => { if (m.type() === 'error') log('options console:', m.text()); });
    await options.goto(`chrome-extension://${id}/options.html`);
    await options.waitForSelector('#import-file:not([disabled])', { timeout: 60000 });
    const readyRows = () => options.locator('#models tr[data-state=ready]').count();
    const storedIds = () => options.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open('qwglm-models');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const db = open.result;
        if (!db.objectStoreNames.contains('manifests')) { db.close(); resolve([]); return; }
        const req = db.transaction('manifests').objectStore('manifests').getAllKeys();
        req.onsuccess = () => { db.close(); resolve(req.result); };
        req.onerror = () => reject(req.error);
      };
    }));

    const cut = await importFile(options, truncated);
    await options.screenshot({ path: join(artifacts, 'options-import-truncated.png') });
    check('a truncated GGUF is rejected with a visible message and nothing is marked ready',
      cut.state === 'failed' && /SmolLM2-truncated\.gguf was not imported/.test(cut.text) && (await readyRows()) === 0 && (await storedIds()).length === 0,
      `${cut.text} | stored: ${JSON.stringify(await storedIds())}`);

    const notes = await importFile(options, notGguf);
    check('a file that is not GGUF is rejected as such', notes.state === 'failed' && /not a GGUF file/.test(notes.text) && (await storedIds()).length === 0, notes.text);

    const t0 = Date.now();
    const good = await importFile(options, original);
    const shown = (await options.textContent('#import-sha256').catch(() => '')).trim();
    const expected = await sha256File(original);
    await options.waitForSelector(`#models tr[data-model="${LOCAL_ID}"][data-state=ready]`, { timeout: 30000 });
    await options.screenshot({ path: join(artifacts, 'options-import-done.png') });
    check('the imported file is stored, its sha256 shown and the model ready', good.state === 'done' && shown === expected,
      `${good.text} in ${(Date.now() - t0) / 1000} s; expected sha256 ${expected}`);

    await options.check(`#models tr[data-model="${LOCAL_ID}"] input[type=radio]`);
    await options.fill('#system-prompt', fixture.messages.find((m) => m.role === 'system').content);
    await options.fill('#max-tokens', '16');
    await options.selectOption('#backend', 'cpu');
    await options.click('#save');
    await options.waitForSelector('#notice:has-text("Saved")');

    const popup = await context.newPage();
    popup.on('pageerror', (e) => log('popup error:', e.message));
    await popup.goto(`chrome-extension://${id}/popup.html`);
    await popup.waitForSelector('#send:not([disabled])', { timeout: 60000 });
    await popup.fill('#prompt', fixture.messages.find((m) => m.role === 'user').content);
    await popup.click('#send');
    await popup.waitForSelector('#last-answer[data-state=done]', { state: 'attached', timeout: timeoutMs });
    const streamed = (await popup.getAttribute('#last-answer', 'data-streamed-ids')).split(',').filter(Boolean).map(Number);
    const status = (await popup.textContent('#status-text')).trim();
    check('the imported model answers the reference greedy ids', JSON.stringify(streamed) === JSON.stringify(fixture.greedy_ids_until_eos), `${streamed} | ${status}`);
  } catch (error) {
    if (!results.some((r) => !r.ok)) { results.push({ name: error.message, ok: false }); console.error('FAIL:', error.message); }
    for (const page of context.pages()) {
      try { await page.screenshot({ path: join(artifacts, `failure-import-${context.pages().indexOf(page)}.png`) }); } catch {}
    }
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(`import.mjs: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((error) => { console.error('FAIL:', error); process.exit(1); });
