// Times the simulator's mat-vecs in V8's wasm (the browser's engine), no browser needed:
//   nice cargo build --release --target wasm32-unknown-unknown -p qwglm-sim --example wasm_bench
//   node sim/examples/wasm_bench.mjs [runs]     (WARMUP_MS, default 3000: time given to V8's tier-up)
// SmolLM2-135M's decode shapes: Q4_1 gate+up 3072 x 576, down 576 x 1536, q+k+v 960 x 576, and
// the Q8_0 output 49152 x 576. Prints the best of `runs` per shape and a checksum of the bits.
import { readFileSync } from 'node:fs';

// WASM_BENCH_FILE: another build of the module (e.g. of an older commit), for A/B runs.
const file = process.env.WASM_BENCH_FILE ?? new URL('../../target/wasm32-unknown-unknown/release/examples/wasm_bench.wasm', import.meta.url);
// Dependencies bring wasm-bindgen imports that the mat-vec path never calls: stubs that throw.
const stub = (mod) => new Proxy({}, { get: (_, name) => () => { throw new Error(`${mod}.${String(name)} called`); } });
const imports = new Proxy({}, { get: (_, mod) => stub(String(mod)) });
const { instance } = await WebAssembly.instantiate(readFileSync(file), imports);
const e = instance.exports;
const runs = Number(process.argv[2] ?? 7);
const shapes = [
  ['Q4_1 gate+up', 0, 3072, 576],
  ['Q4_1 down', 0, 576, 1536],
  ['Q4_1 qkv', 0, 960, 576],
  ['Q8_0 output', 1, 49152, 576],
];
// Warm-up until V8 has tiered the interpreter loop up from its baseline compiler (a huge
// function: its optimised code comes some time after the first calls).
e.setup(0, 960, 576);
for (const t0 = performance.now(); performance.now() - t0 < Number(process.env.WARMUP_MS ?? 3000); ) e.run();
let total = 0;
for (const [name, fmt, n, k] of shapes) {
  e.setup(fmt, n, k);
  let sum = e.run();
  const w0 = e.warp_instructions();
  e.run();
  const wi = e.warp_instructions() - w0;
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const s = e.run();
    best = Math.min(best, performance.now() - t);
    if (s !== sum) throw new Error(`${name}: checksum changed between runs`);
  }
  total += best;
  console.log(`${name.padEnd(14)} ${n} x ${k}: ${best.toFixed(2)} ms, ${(wi / 1e3).toFixed(1)} k warp instr, ${((best * 1e6) / wi).toFixed(1)} ns/warp instr, ${((best * 1e6) / (n * k)).toFixed(3)} ns/weight, checksum ${(sum >>> 0).toString(16)}`);
}
console.log(`sum ${total.toFixed(2)} ms`);
