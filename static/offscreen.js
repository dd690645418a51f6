// Offscreen document loader. The connect listener is registered synchronously, before the wasm is
// ready; the relay hands each port to the engine worker, which greets it, and clients wait for
// that greeting. The engine itself runs in the worker (engine-worker.js), off this main thread.
import init, { EngineRelay } from './wasm/qwglm_extension.js';

const relay = init({ module_or_path: new URL('./wasm/qwglm_extension_bg.wasm', import.meta.url) })
  .then(() => new EngineRelay());

chrome.runtime.onConnect.addListener((port) => {
  relay.then((r) => r.attach(port)).catch((error) => console.error('qwglm engine relay:', error));
});
