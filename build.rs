//! Root build script: stamps the CLI with the git commit it was built from, so bug reports and
//! docs/PERF.md rows name the exact code, and validates every WGSL kernel in `shaders/` with naga
//! after `#include` expansion (the engine's own preprocessor), failing the build with the
//! original file:line of each error. (Planned: manifest.json checks.)

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

#[path = "engine/src/shaders/preprocess.rs"]
#[allow(dead_code)]
mod preprocess;

fn main() {
    validate_shaders();
    stamp_commit();
}

/// Every `shaders/*.wgsl` is a kernel: it must open with a header comment (purpose, bindings,
/// dispatch) and validate as WGSL with naga 30 (the version wgpu 30 uses).
fn validate_shaders() {
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-changed=engine/src/shaders/preprocess.rs");
    let mut files = BTreeMap::new();
    for dir in ["", "common/"] {
        let Ok(entries) = std::fs::read_dir(Path::new("shaders").join(dir)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".wgsl") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_else(|e| panic!("shaders/{dir}{name}: {e}"));
                files.insert(format!("{dir}{name}"), text);
            }
        }
    }
    let mut errors = Vec::new();
    let mut kernels = 0;
    for (path, text) in files.iter().filter(|(p, _)| !p.starts_with("common/")) {
        kernels += 1;
        let stem = path.trim_end_matches(".wgsl");
        let header: String = text.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        if !header.starts_with(&format!("// {stem}:")) || !header.contains("Bindings") || !header.contains("Dispatch") {
            errors.push(format!(
                "shaders/{path}:1: kernel header missing: start with `// {stem}: <purpose>` and document Bindings and Dispatch"
            ));
        }
        let expanded = match preprocess::preprocess(path, &|p| files.get(p).map(String::as_str)) {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("shaders/{e}"));
                continue;
            }
        };
        let at = |line: u32, column: u32| format!("shaders/{}:{column}", expanded.origin(line as usize));
        let module = match naga::front::wgsl::parse_str(&expanded.source) {
            Ok(m) => m,
            Err(e) => {
                let place = e.location(&expanded.source).map_or(format!("shaders/{path}"), |l| at(l.line_number, l.line_position));
                errors.push(format!("{place}: {} (in kernel {path})", e.message()));
                continue;
            }
        };
        // unpack2x16float is core WGSL; naga gates it because GLES lacks it. Only the tensor-core
        // kernels (native, chosen by adapter features) may use f16 and cooperative matrices.
        let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if preprocess::uses_cooperative_matrices(text) {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16 | naga::valid::Capabilities::COOPERATIVE_MATRIX;
        }
        let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        if let Err(e) = validator.validate(&module) {
            let place = e.location(&expanded.source).map_or(format!("shaders/{path}"), |l| at(l.line_number, l.line_position));
            let detail: Vec<String> = e.spans().map(|(_, label)| label.clone()).filter(|l| !l.is_empty()).collect();
            let mut cause = e.as_inner().to_string();
            let mut source = std::error::Error::source(e.as_inner());
            while let Some(s) = source {
                cause.push_str(&format!(": {s}"));
                source = s.source();
            }
            errors.push(format!("{place}: {cause} {detail:?} (in kernel {path})"));
        }
    }
    if kernels == 0 {
        errors.push("shaders/: no kernels found".into());
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        panic!("{} WGSL error(s) in shaders/ (listed above)", errors.len());
    }
}

fn stamp_commit() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    println!("cargo:rustc-env=QWGLM_COMMIT={commit}{}", if dirty { "-dirty" } else { "" });
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}
