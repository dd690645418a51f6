// Engine worker loader (a dedicated module worker started by the offscreen document). The message
// listener is registered synchronously, before the wasm is ready; messages are handed over in
// order once it resolves.
import init, { EngineWorker } from './wasm/qwglm_extension.js';

const engine = init({ module_or_path: new URL('./wasm/qwglm_extension_bg.wasm', import.meta.url) })
  .then(() => new EngineWorker());

self.onmessage = (event) => {
  engine.then((e) => e.on_message(event.data)).catch((error) => console.error('qwglm engine worker:', error));
};
