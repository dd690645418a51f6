// options loader: mounts the Yew app (popup crate).
import init, { start_options } from './wasm/qwglm_popup.js';

await init({ module_or_path: new URL('./wasm/qwglm_popup_bg.wasm', import.meta.url) });
start_options();
