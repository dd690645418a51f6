// Offscreen document loader. The connect listener is registered synchronously, before the wasm is
// ready; the engine host greets each port once attached, and clients wait for that greeting.
import init, { EngineHost } from './wasm/qwglm_extension.js';

const host = init({ module_or_path: new URL('./wasm/qwglm_extension_bg.wasm', import.meta.url) })
  .then(() => new EngineHost());

chrome.runtime.onConnect.addListener((port) => {
  host.then((h) => h.attach(port)).catch((error) => console.error('qwglm engine host:', error));
});
