//! Compiles every kernel in `shaders/` (after the engine's `#include` preprocessing) to SIMT
//! bytecode with `qwglm-sim-lower`, and writes it to `$OUT_DIR/kernels.json`, which the crate
//! embeds: naga runs here, never in the shipped (wasm) crate. A construct the simulator does not
//! support fails the build with the kernel's original file:line.

use std::collections::BTreeMap;
use std::path::Path;

#[path = "../engine/src/shaders/preprocess.rs"]
#[allow(dead_code)]
mod preprocess;

fn main() {
    let shaders = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    println!("cargo:rerun-if-changed=../shaders");
    println!("cargo:rerun-if-changed=../engine/src/shaders/preprocess.rs");
    let mut files = BTreeMap::new();
    for dir in ["", "common/"] {
        for entry in std::fs::read_dir(shaders.join(dir)).expect("shaders/").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".wgsl") {
                let text = std::fs::read_to_string(entry.path()).expect("read shader");
                files.insert(format!("{dir}{name}"), text);
            }
        }
    }
    let mut programs = Vec::new();
    let mut errors = Vec::new();
    // The tensor-core matmuls (matmul_coop_<format>.wgsl, cooperative matrices and f16) compile
    // too: SimDevice runs the plain matmul_<format>.wgsl of the same op unless asked for tensor
    // cores (`SimOptions::variants`), which is faster on a CPU. Their bytecode (2.1 of the
    // 3.3 MB of JSON) stays out of wasm builds: browsers have no cooperative matrices, so the
    // extension never asks for them; they are compiled, and so checked, for every target.
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "wasm32");
    for path in files.keys().filter(|p| !p.starts_with("common/")) {
        let expanded = match preprocess::preprocess(path, &|p| files.get(p).map(String::as_str)) {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("shaders/{e}"));
                continue;
            }
        };
        let origin = |line: usize| format!("shaders/{}", expanded.origin(line));
        match qwglm_sim_lower::compile::compile_kernel(path, &expanded.source, &origin) {
            Ok(_) if wasm && preprocess::uses_cooperative_matrices(&files[path]) => {}
            Ok(p) => programs.push(p),
            Err(e) => errors.push(format!("{e} (in kernel {path})")),
        }
    }
    if !errors.is_empty() {
        panic!("the GPU simulator cannot compile these kernels:\n{}", errors.join("\n"));
    }
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("kernels.json");
    std::fs::write(out, serde_json::to_string(&programs).expect("serialize")).expect("write kernels.json");
}
