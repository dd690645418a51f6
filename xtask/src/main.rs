//! `cargo xtask <command>`: build the extension and run its browser tests.
//!
//! - `dist [--fast]`: wasm release build of the extension, popup and options crates (one cargo
//!   command, so features unify once) → wasm-bindgen --target web → wasm-opt (-O3 for the
//!   extension, -Oz for the pages; skipped with `--fast`) → `dist/` with the manifest, pages,
//!   loaders and icons. Installs the exact wasm-bindgen CLI (the version in Cargo.lock) and npm
//!   binaryen 132 (older wasm-opt cannot parse wasm-bindgen's `table.fill`) when missing.
//! - `test-browser [--fast] [--no-build]`: `dist`, then tests/browser/chat.mjs, extension.mjs and
//!   import.mjs (playwright-core driving headless Chromium) against local Hub-layout servers with
//!   the SmolLM2 GGUF; ends with a cargo-style `test result:` line.
//! - `run [--headless] [--no-build] [--fast] [--backend auto|webgpu|cpu|simulator] [PROMPT]`: the product:
//!   `dist`, a local Hub-layout server for the cached models, Chromium with the extension loaded
//!   (persistent profile `target/run-profile`), the default model downloaded into IndexedDB and
//!   the chat open (xtask/run.mjs). Headless (the default without `$DISPLAY`) it asks PROMPT in
//!   the real popup, prints the streamed answer to stdout and exits.
//! - `bench-browser [--no-build] [--fast] [--tokens N] [--json FILE]`: a benchmark, not a test
//!   (not in scripts/test.sh): `dist`, then xtask/bench-browser.mjs, one headless Chromium run
//!   timing SmolLM2-135M-Instruct prefill and decode in the extension on the GPU simulator and in
//!   wllama (npm @wllama/wllama, CPU, 1 and 2 threads) on the same GGUF; prints a table and ratios.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

const BINARYEN_VERSION: &str = "132.0.0";
const PLAYWRIGHT_VERSION: &str = "1.65.1";
/// The wllama release `bench-browser` compares against.
const WLLAMA_VERSION: &str = "3.8.1";
/// Browser test scripts, run in order; each prints `PASS:`/`FAIL:` lines per check.
const BROWSER_TESTS: [&str; 3] = ["tests/browser/chat.mjs", "tests/browser/extension.mjs", "tests/browser/import.mjs"];
const WASM_CRATES: [(&str, &str); 3] =
    [("qwglm-extension", "qwglm_extension"), ("qwglm-popup", "qwglm_popup"), ("qwglm-options", "qwglm_options")];

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let outcome = match args.first().map(String::as_str) {
        Some("dist") => dist(flag("--fast")),
        Some("test-browser") => test_browser(flag("--fast"), flag("--no-build")),
        Some("run") => run_product(&args[1..]),
        Some("bench-browser") => bench_browser(&args[1..]),
        _ => Err("usage: cargo xtask dist [--fast] | test-browser [--fast] [--no-build] | run [--headless] [--no-build] [--fast] [--backend auto|webgpu|cpu|simulator] [PROMPT] | bench-browser [--no-build] [--fast] [--tokens N] [--json FILE]".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repo root").to_path_buf()
}

/// Tools installed by xtask (npm packages); under target/, so outside git.
fn tools_dir() -> PathBuf {
    repo_root().join("target/tools")
}

/// Its own target dir: the wasm release build must not wait on (or evict) native builds.
fn wasm_target_dir() -> PathBuf {
    env::var_os("QWGLM_WASM_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/wasm"))
}

fn run(command: &mut Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command.status().map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed ({status})", command.get_program()))
    }
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The wasm-bindgen crate version in Cargo.lock; the CLI must match it exactly.
fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = fs::read_to_string(repo_root().join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(version.trim_end_matches('"').to_string());
            }
        }
    }
    Err("Cargo.lock has no wasm-bindgen package".into())
}

fn ensure_wasm_bindgen() -> Result<()> {
    let want = locked_wasm_bindgen_version()?;
    let have = output(Command::new("wasm-bindgen").arg("--version"));
    if have.as_deref().is_some_and(|v| v.split_whitespace().nth(1) == Some(want.as_str())) {
        return Ok(());
    }
    eprintln!("xtask: installing wasm-bindgen-cli {want} (found {:?})", have.map(|v| v.trim().to_string()));
    // No --locked: the CLI's own lockfile pins a webpki-roots release the registry no longer has.
    run(Command::new("cargo").args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]))
}

fn npm_package(name: &str, version: &str) -> Result<PathBuf> {
    let dir = tools_dir().join("npm");
    let installed = dir.join("node_modules").join(name).join("package.json");
    let current = fs::read_to_string(&installed).unwrap_or_default();
    if !current.contains(&format!("\"version\": \"{version}\"")) {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !dir.join("package.json").exists() {
            fs::write(dir.join("package.json"), "{\"private\": true}\n").map_err(|e| e.to_string())?;
        }
        run(Command::new("npm").current_dir(&dir).args(["install", "--no-audit", "--no-fund", &format!("{name}@{version}")]))?;
    }
    Ok(dir)
}

fn wasm_opt() -> Result<PathBuf> {
    Ok(npm_package("binaryen", BINARYEN_VERSION)?.join("node_modules/.bin/wasm-opt"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    Ok(())
}

fn dist(fast: bool) -> Result<()> {
    let root = repo_root();
    ensure_wasm_bindgen()?;
    let wasm_opt = if fast { None } else { Some(wasm_opt()?) };

    let mut build = Command::new("cargo");
    build.current_dir(&root).env("CARGO_TARGET_DIR", wasm_target_dir());
    build.args(["build", "--release", "--target", "wasm32-unknown-unknown"]);
    for (package, _) in WASM_CRATES {
        build.args(["-p", package]);
    }
    run(&mut build)?;

    let dist = root.join("dist");
    if dist.exists() {
        fs::remove_dir_all(&dist).map_err(|e| format!("{}: {e}", dist.display()))?;
    }
    copy_dir(&root.join("static"), &dist)?;
    fs::copy(root.join("manifest.json"), dist.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?;

    let out = dist.join("wasm");
    for (_, lib) in WASM_CRATES {
        let wasm = wasm_target_dir().join(format!("wasm32-unknown-unknown/release/{lib}.wasm"));
        run(Command::new("wasm-bindgen").args(["--target", "web", "--no-typescript", "--out-dir"]).arg(&out).arg(&wasm))?;
        if let Some(wasm_opt) = &wasm_opt {
            // The extension module runs the engine (and the GPU simulator's interpreter, ~15-20 %
            // faster at -O3 than at -Oz); the popup and options pages are UI, optimised for size.
            let level = if lib == "qwglm_extension" { "-O3" } else { "-Oz" };
            optimize_cached(wasm_opt, level, &out.join(format!("{lib}_bg.wasm")))?;
        }
    }
    for (_, lib) in WASM_CRATES {
        let size = fs::metadata(out.join(format!("{lib}_bg.wasm"))).map(|m| m.len()).unwrap_or(0);
        eprintln!("xtask: dist/wasm/{lib}_bg.wasm {size} bytes");
    }
    eprintln!("xtask: extension ready in {}", dist.display());
    Ok(())
}

/// `wasm-opt LEVEL` in place, reusing the previous output when the input and level are the same:
/// it takes minutes here, and `run` rebuilds dist/ every time.
fn optimize_cached(wasm_opt: &Path, level: &str, module: &Path) -> Result<()> {
    use std::hash::{Hash, Hasher};
    let input = fs::read(module).map_err(|e| format!("{}: {e}", module.display()))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hasher);
    level.hash(&mut hasher);
    let cache_dir = repo_root().join("target/wasm-opt-cache");
    let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.wasm");
    let cached = cache_dir.join(format!("{:016x}-{name}", hasher.finish()));
    if !cached.exists() {
        fs::create_dir_all(&cache_dir).map_err(|e| format!("{}: {e}", cache_dir.display()))?;
        run(Command::new(wasm_opt).arg(level).arg(module).arg("-o").arg(&cached))?;
    } else {
        eprintln!("xtask: wasm-opt output of {name} unchanged (cached)");
    }
    fs::copy(&cached, module).map_err(|e| format!("{}: {e}", module.display()))?;
    Ok(())
}

fn chromium() -> Result<String> {
    let chromium = env::var("QWGLM_CHROMIUM").unwrap_or_else(|_| "/usr/lib/chromium/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no Chromium at {chromium}: apt-get install -y chromium (or set QWGLM_CHROMIUM)"));
    }
    Ok(chromium)
}

/// The product: the extension in Chromium with the default model served locally (xtask/run.mjs).
fn run_product(args: &[String]) -> Result<()> {
    let mut headless = env::var_os("DISPLAY").is_none_or(|d| d.is_empty());
    let (mut fast, mut no_build, mut backend, mut prompt) = (false, false, None, Vec::new());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--headless" => headless = true,
            "--headed" => headless = false,
            "--fast" => fast = true,
            "--no-build" => no_build = true,
            "--backend" => backend = Some(rest.next().ok_or("--backend needs auto, webgpu, cpu or simulator")?.clone()),
            "--prompt" => prompt.push(rest.next().ok_or("--prompt needs a text")?.clone()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            text => prompt.push(text.to_string()),
        }
    }
    if !no_build {
        dist(fast)?;
    }
    let browser = BrowserScripts::prepare()?;
    let mut command = browser.node("xtask/run.mjs");
    command
        .env("QWGLM_PROFILE", repo_root().join("target/run-profile"))
        .env("QWGLM_HEADLESS", if headless { "1" } else { "0" });
    if !prompt.is_empty() {
        command.env("QWGLM_PROMPT", prompt.join(" "));
    }
    if let Some(backend) = backend {
        command.env("QWGLM_BACKEND", backend);
    }
    run(&mut command)
}

/// The browser benchmark: our extension on the GPU simulator vs wllama (xtask/bench-browser.mjs).
fn bench_browser(args: &[String]) -> Result<()> {
    let (mut fast, mut no_build, mut tokens, mut json) = (false, false, None, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--fast" => fast = true,
            "--no-build" => no_build = true,
            "--tokens" => tokens = Some(rest.next().ok_or("--tokens needs a number")?.clone()),
            "--json" => json = Some(rest.next().ok_or("--json needs a file")?.clone()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !no_build {
        dist(fast)?;
    }
    npm_package("@wllama/wllama", WLLAMA_VERSION)?;
    let mut command = BrowserScripts::prepare()?.node("xtask/bench-browser.mjs");
    if let Some(tokens) = tokens {
        command.env("QWGLM_BENCH_TOKENS", tokens);
    }
    if let Some(json) = json {
        command.env("QWGLM_BENCH_JSON", json);
    }
    run(&mut command)
}

/// What every node script that drives Chromium gets (tests/browser/harness.mjs reads it):
/// playwright-core, the Chromium binary and the built extension.
struct BrowserScripts {
    chromium: String,
    node_modules: PathBuf,
}

impl BrowserScripts {
    fn prepare() -> Result<Self> {
        let chromium = chromium()?;
        let node_modules = npm_package("playwright-core", PLAYWRIGHT_VERSION)?.join("node_modules");
        Ok(Self { chromium, node_modules })
    }

    /// `node SCRIPT` from the repository root with that environment.
    fn node(&self, script: &str) -> Command {
        let root = repo_root();
        let mut command = Command::new("node");
        command
            .current_dir(&root)
            .arg(script)
            .env("QWGLM_NODE_MODULES", &self.node_modules)
            .env("QWGLM_CHROMIUM", &self.chromium)
            .env("QWGLM_DIST", root.join("dist"));
        command
    }
}

fn test_browser(fast: bool, no_build: bool) -> Result<()> {
    if !no_build {
        dist(fast)?;
    }
    let browser = BrowserScripts::prepare()?;
    let (mut passed, mut failed) = (0u32, 0u32);
    for script in BROWSER_TESTS {
        let mut command = browser.node(script);
        command.stdout(Stdio::piped());
        eprintln!("xtask: running {command:?}");
        let mut child = command.spawn().map_err(|e| format!("cannot start node: {e}"))?;
        let (mut script_passed, mut script_failed) = (0u32, 0u32);
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
                println!("{line}");
                if line.contains("PASS:") {
                    script_passed += 1;
                } else if line.contains("FAIL:") {
                    script_failed += 1;
                }
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() && script_failed == 0 {
            script_failed = 1; // it died without saying which check failed
        }
        passed += script_passed;
        failed += script_failed;
    }
    // In cargo's format, so scripts/test.sh counts the browser checks in the suite's total.
    println!("test result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out", if failed == 0 { "ok" } else { "FAILED" });
    if failed > 0 {
        return Err(format!("{failed} browser check(s) failed"));
    }
    Ok(())
}
