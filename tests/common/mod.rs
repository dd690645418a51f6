//! Shared helpers for the cross-crate parity suites: fixture paths, the real-model cache,
//! loading a model on the reference device, and comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use engine::device::RefDevice;
use engine::loader::{open_model, ModelFiles};
use engine::model::{Model, ModelOptions};
use engine::session::Session;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The real-model cache filled by `scripts/fetch-models.sh`. Missing files fail the test: a
/// skipped parity check would hide a regression.
pub fn real_model(file: &str) -> PathBuf {
    let dir = std::env::var_os("QWGLM_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/qwglm/models")
    });
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh (or set QWGLM_MODELS) before the tests",
        path.display()
    );
    path
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array of ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub struct Loaded {
    pub session: Session,
    pub files: ModelFiles,
}

/// Opens a model and loads it on the reference device.
pub fn load_ref(path: &Path, opts: ModelOptions) -> Loaded {
    let files = open_model(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut device = Box::new(RefDevice::new());
    let model = Model::load(device.as_mut(), files.source.as_ref(), files.config.clone(), opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
    Loaded { session: Session::new(device, model), files }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Greedy decoding straight on a session (no tokenizer needed), `n` new tokens, never stopping early.
pub fn greedy_ids(session: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut logits = pollster::block_on(session.prefill(prompt)).expect("prefill").logits;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = engine::sampling::greedy(&logits).expect("greedy");
        out.push(id);
        if i + 1 < n {
            logits = pollster::block_on(session.append(id)).expect("decode");
        }
    }
    out
}

/// As [`greedy_ids`], but the device takes each argmax (`prefill_argmax` / `append_argmax`, the
/// path `generate` uses for greedy decoding without penalties).
pub fn device_greedy_ids(session: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut id = pollster::block_on(session.prefill_argmax(prompt)).expect("prefill_argmax").0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(id);
        if i + 1 < n {
            id = pollster::block_on(session.append_argmax(id)).expect("decode");
        }
    }
    out
}

/// As [`device_greedy_ids`], through `append_argmax_pipelined` with `depth` chained passes in
/// flight (what `generate` does). `restart_at`: after that many ids, make a plain `append_argmax`
/// call, which must discard the passes in flight, then continue pipelined.
pub fn pipelined_greedy_ids(session: &mut Session, prompt: &[u32], n: usize, depth: usize, restart_at: Option<usize>) -> Vec<u32> {
    let mut id = pollster::block_on(session.prefill_argmax(prompt)).expect("prefill_argmax").0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(id);
        if i + 1 < n {
            let step = if restart_at == Some(i + 1) {
                pollster::block_on(session.append_argmax(id))
            } else {
                pollster::block_on(session.append_argmax_pipelined(id, depth))
            };
            id = step.expect("decode");
        }
    }
    out
}

/// Indices of the `k` largest values, largest first.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}
