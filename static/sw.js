// Service worker loader. MV3 requires listeners to be registered synchronously at top level, and the
// wasm host is only ready after an async init, so events are handed over once it resolves.
import init, { ServiceWorkerHost } from './wasm/qwglm_extension.js';

const host = init({ module_or_path: new URL('./wasm/qwglm_extension_bg.wasm', import.meta.url) })
  .then(() => new ServiceWorkerHost());

chrome.runtime.onMessage.addListener((message, _sender, sendResponse) => {
  host.then((h) => h.on_message(message)).then(sendResponse, (error) => sendResponse({ type: 'error', id: 0, message: String(error) }));
  return true; // the reply is asynchronous
});
