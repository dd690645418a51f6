//! The one WGSL preprocessor: `#include "path"` (relative to `shaders/`), each file at most once,
//! with a line map so that validation errors point at the original file and line. Shared by the
//! engine (kernel registry), the root build.rs (naga validation) and, later, the GPU simulator;
//! it depends on `std` only so build.rs can include this file by path.

/// Whether a kernel file declares `enable wgpu_cooperative_matrix;`: a native-only tensor-core
/// variant (validated with f16 and cooperative matrices by build.rs, skipped by the simulator's
/// build, which runs the plain kernel of the same op).
pub fn uses_cooperative_matrices(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "enable wgpu_cooperative_matrix;")
}

/// A kernel after `#include` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preprocessed {
    pub source: String,
    /// For each line of `source` (0-based), the file and 1-based line it came from.
    pub line_map: Vec<(String, u32)>,
}

impl Preprocessed {
    /// `file:line` of a 1-based line of the expanded source.
    pub fn origin(&self, expanded_line: usize) -> String {
        match expanded_line.checked_sub(1).and_then(|i| self.line_map.get(i)) {
            Some((file, line)) => format!("{file}:{line}"),
            None => format!("<expanded>:{expanded_line}"),
        }
    }
}

/// Expands `#include "..."` directives of `root`. `resolve` maps a path relative to `shaders/`
/// to the file's text. Errors name the including file and line.
pub fn preprocess<'a>(root: &str, resolve: &dyn Fn(&str) -> Option<&'a str>) -> Result<Preprocessed, String> {
    let mut out = Preprocessed { source: String::new(), line_map: Vec::new() };
    let mut included = Vec::new();
    expand(root, resolve, &mut included, &mut out, 0)?;
    Ok(out)
}

const MAX_DEPTH: usize = 16;

fn expand<'a>(
    file: &str,
    resolve: &dyn Fn(&str) -> Option<&'a str>,
    included: &mut Vec<String>,
    out: &mut Preprocessed,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{file}: includes nested deeper than {MAX_DEPTH}"));
    }
    if included.iter().any(|f| f == file) {
        return Ok(());
    }
    included.push(file.to_string());
    let text = resolve(file).ok_or_else(|| format!("{file}: no such shader file"))?;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("#include") {
            let path = rest
                .trim()
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .ok_or_else(|| format!("{file}:{}: expected #include \"path\"", i + 1))?;
            expand(path, resolve, included, out, depth + 1).map_err(|e| format!("{e}\n  included from {file}:{}", i + 1))?;
        } else if trimmed.starts_with('#') {
            return Err(format!("{file}:{}: unknown directive `{trimmed}`", i + 1));
        } else {
            out.source.push_str(line);
            out.source.push('\n');
            out.line_map.push((file.to_string(), (i + 1) as u32));
        }
    }
    Ok(())
}
