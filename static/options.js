// options loader: mounts the Yew app (options crate).
import init, { start_options } from './wasm/qwglm_options.js';

await init({ module_or_path: new URL('./wasm/qwglm_options_bg.wasm', import.meta.url) });
start_options();
