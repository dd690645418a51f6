//! Plain-Rust reference kernels: the semantics every device must reproduce. Written for clarity
//! first; reductions accumulate in f64 where that is cheap, so the oracle is at least as exact as
//! the f32 references it is tested against. Weight matrices are dequantized row by row from the
//! packed device layout with the same dequantizer the format tests check against gguf-py.

use crate::error::{EngineError, Result};
use crate::kernels::{
    ArgmaxParams, AttentionParams, TopKParams, ElementwiseParams, EmbedParams, MatMulParams, RmsNormParams, RopeKvWriteParams,
    SwiGluParams, WeightFormat,
};
use crate::quant;

fn kernel_err(kernel: &str, detail: impl Into<String>) -> EngineError {
    EngineError::Kernel { kernel: kernel.to_string(), detail: detail.into() }
}

fn check_len(kernel: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(kernel_err(kernel, format!("{what} has {have} elements, needs {need}")));
    }
    Ok(())
}

/// Number of blocks in a packed `[rows, cols]` weight.
pub fn weight_blocks(format: WeightFormat, rows: usize, cols: usize) -> Result<usize> {
    let be = format.block_elems();
    if cols % be != 0 {
        return Err(kernel_err("weight", format!("{cols} columns is not a multiple of the {} block", format.name())));
    }
    Ok(rows * (cols / be))
}

/// Dequantizes row `row` of a packed `[rows, cols]` weight into `out` (len `cols`).
pub fn weight_row(format: WeightFormat, packed: &[u8], rows: usize, cols: usize, row: usize, out: &mut [f32]) -> Result<()> {
    let n_blocks = weight_blocks(format, rows, cols)?;
    let first = row * (cols / format.block_elems());
    quant::dequantize_packed(format, packed, n_blocks, first, &mut out[..cols])
}

/// Rows of a table part holding vocabulary rows `first_row .. first_row + n_rows`; ids outside that
/// range are left to the other parts (the model checks ids against the vocabulary before a pass).
pub fn embed(format: WeightFormat, table: &[u8], ids: &[u32], out: &mut [f32], p: &EmbedParams) -> Result<()> {
    let (n, hidden, first, rows) = (p.n_tokens as usize, p.hidden as usize, p.first_row as usize, p.n_rows as usize);
    check_len("embed", "ids", ids.len(), n)?;
    check_len("embed", "out", out.len(), n * hidden)?;
    for (t, &id) in ids[..n].iter().enumerate() {
        let Some(row) = (id as usize).checked_sub(first).filter(|&r| r < rows) else { continue };
        weight_row(format, table, rows, hidden, row, &mut out[t * hidden..(t + 1) * hidden])?;
    }
    Ok(())
}

/// HF order: `x * rsqrt(mean(x^2) + eps)`, then `* weight`.
fn rms_norm_row(x: &[f32], w: &[f32], out: &mut [f32], eps: f32) {
    let mean_sq = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let inv = (1.0 / (mean_sq + eps as f64).sqrt()) as f32;
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
}

pub fn rms_norm(x: &[f32], weight: &[f32], out: &mut [f32], p: &RmsNormParams) -> Result<()> {
    let (rows, cols) = (p.n_rows as usize, p.n_cols as usize);
    check_len("rms_norm", "x", x.len(), rows * cols)?;
    check_len("rms_norm", "weight", weight.len(), cols)?;
    check_len("rms_norm", "out", out.len(), rows * cols)?;
    for r in 0..rows {
        rms_norm_row(&x[r * cols..(r + 1) * cols], &weight[..cols], &mut out[r * cols..(r + 1) * cols], p.eps);
    }
    Ok(())
}

pub fn add_rms_norm(residual: &mut [f32], x: &[f32], weight: &[f32], out: &mut [f32], p: &RmsNormParams) -> Result<()> {
    let n = (p.n_rows * p.n_cols) as usize;
    check_len("add_rms_norm", "residual", residual.len(), n)?;
    check_len("add_rms_norm", "x", x.len(), n)?;
    for (r, &v) in residual[..n].iter_mut().zip(&x[..n]) {
        *r += v;
    }
    rms_norm(residual, weight, out, p)
}

/// Dot product with 8 independent f32 lanes (vectorizes; summation order is fixed and documented).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    let pairs = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
}

/// `out[m * out_stride + out_col + n] = x[x_row+m] · w[n] + bias[n]`. Each weight row is dequantized once and reused
/// for all activation rows; rows are spread over threads natively.
pub fn matmul(
    format: WeightFormat,
    w: &[u8],
    x: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    p: &MatMulParams,
) -> Result<()> {
    let (m, n, k, x_row) = (p.m as usize, p.n as usize, p.k as usize, p.x_row as usize);
    let (stride, col) = (p.out_stride as usize, p.out_col as usize);
    if col + n > stride {
        return Err(kernel_err("matmul", format!("columns {col}+{n} overflow the output stride {stride}")));
    }
    check_len("matmul", "x", x.len(), (x_row + m) * k)?;
    if m > 0 {
        check_len("matmul", "out", out.len(), (m - 1) * stride + col + n)?;
    }
    if let Some(b) = bias {
        check_len("matmul", "bias", b.len(), n)?;
    }
    let n_blocks = weight_blocks(format, n, k)?;
    let needed = quant::packed_len(format, n_blocks);
    if w.len() < needed {
        return Err(kernel_err("matmul", format!("weight buffer has {} bytes, needs {needed}", w.len())));
    }
    let x = &x[x_row * k..(x_row + m) * k];
    // Output is [m, n] but we iterate weight rows: compute into a transposed [n, m] scratch per thread.
    let compute_rows = |rows: std::ops::Range<usize>, dst: &mut [f32]| -> Result<()> {
        let mut row = vec![0f32; k];
        for (i, r) in rows.clone().enumerate() {
            weight_row(format, w, n, k, r, &mut row)?;
            let b = bias.map_or(0.0, |b| b[r]);
            for t in 0..m {
                dst[i * m + t] = dot(&x[t * k..(t + 1) * k], &row) + b;
            }
        }
        Ok(())
    };
    let mut transposed = vec![0f32; n * m];
    parallel_chunks(&mut transposed, n, m, compute_rows)?;
    for r in 0..n {
        for t in 0..m {
            out[t * stride + col + r] = transposed[r * m + t];
        }
    }
    Ok(())
}

/// Splits `rows` rows of `row_len` elements of `dst` over the available cores.
#[cfg(not(target_arch = "wasm32"))]
fn parallel_chunks<F>(dst: &mut [f32], rows: usize, row_len: usize, f: F) -> Result<()>
where
    F: Fn(std::ops::Range<usize>, &mut [f32]) -> Result<()> + Sync,
{
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows.max(1));
    // Small jobs aren't worth a thread spawn.
    if threads <= 1 || rows * row_len < 4096 {
        return f(0..rows, dst);
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = dst
            .chunks_mut(per * row_len)
            .enumerate()
            .map(|(i, chunk)| {
                let f = &f;
                let start = i * per;
                let end = (start + per).min(rows);
                s.spawn(move || f(start..end, chunk))
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| kernel_err("matmul", "worker panicked"))?)
    })
}

#[cfg(target_arch = "wasm32")]
fn parallel_chunks<F>(dst: &mut [f32], rows: usize, _row_len: usize, f: F) -> Result<()>
where
    F: Fn(std::ops::Range<usize>, &mut [f32]) -> Result<()>,
{
    f(0..rows, dst)
}

/// Builds the RoPE cos/sin table `[ctx, head_dim/2, 2]` exactly as transformers does in f32:
/// `inv_freq = 1 / theta^(2i/d)`, `angle = pos * inv_freq`.
pub fn rope_table(theta: f32, head_dim: usize, ctx: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let mut table = Vec::with_capacity(ctx * half * 2);
    for pos in 0..ctx {
        for &f in &inv_freq {
            let angle = pos as f32 * f;
            table.push((angle as f64).cos() as f32);
            table.push((angle as f64).sin() as f32);
        }
    }
    table
}

/// Rotates one head in place by the `(cos, sin)` pairs of its position's table row.
fn rope_head(v: &mut [f32], row: &[f32], interleaved: bool) {
    let half = v.len() / 2;
    for i in 0..half {
        let (cos, sin) = (row[2 * i], row[2 * i + 1]);
        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (x0, x1) = (v[a], v[b]);
        v[a] = x0 * cos - x1 * sin;
        v[b] = x1 * cos + x0 * sin;
    }
}

/// `Op::RopeKvWrite`: q/k heads of the fused qkv rows are (optionally) RMS-normalised per head,
/// rotated, and written to `q_out` and the K cache; v heads are copied to the V cache.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv_write(
    qkv: &[f32],
    table: &[f32],
    norms: Option<(&[f32], &[f32])>,
    interleaved: bool,
    q_out: &mut [f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    p: &RopeKvWriteParams,
) -> Result<()> {
    let (n, heads, kv_heads, d, pos0) =
        (p.n_tokens as usize, p.n_heads as usize, p.n_kv_heads as usize, p.head_dim as usize, p.pos_offset as usize);
    if d % 2 != 0 {
        return Err(kernel_err("rope_kv_write", format!("odd head_dim {d}")));
    }
    let width = (heads + 2 * kv_heads) * d;
    let kv_dim = kv_heads * d;
    check_len("rope_kv_write", "qkv", qkv.len(), n * width)?;
    check_len("rope_kv_write", "table", table.len(), (pos0 + n) * d)?;
    check_len("rope_kv_write", "q_out", q_out.len(), n * heads * d)?;
    check_len("rope_kv_write", "k_cache", k_cache.len(), (pos0 + n) * kv_dim)?;
    check_len("rope_kv_write", "v_cache", v_cache.len(), (pos0 + n) * kv_dim)?;
    if let Some((qn, kn)) = norms {
        check_len("rope_kv_write", "q_norm", qn.len(), d)?;
        check_len("rope_kv_write", "k_norm", kn.len(), d)?;
    }
    for t in 0..n {
        let row = &qkv[t * width..(t + 1) * width];
        let angles = &table[(pos0 + t) * d..(pos0 + t + 1) * d];
        let cache_row = (pos0 + t) * kv_dim;
        for h in 0..heads + kv_heads {
            let src = &row[h * d..(h + 1) * d];
            let dst = if h < heads {
                &mut q_out[(t * heads + h) * d..(t * heads + h + 1) * d]
            } else {
                &mut k_cache[cache_row + (h - heads) * d..cache_row + (h - heads + 1) * d]
            };
            match norms {
                Some((qn, kn)) => rms_norm_row(src, if h < heads { &qn[..d] } else { &kn[..d] }, dst, p.eps),
                None => dst.copy_from_slice(src),
            }
            rope_head(dst, angles, interleaved);
        }
        v_cache[cache_row..cache_row + kv_dim].copy_from_slice(&row[(heads + kv_heads) * d..]);
    }
    Ok(())
}

pub fn attention(q: &[f32], k_cache: &[f32], v_cache: &[f32], out: &mut [f32], p: &AttentionParams) -> Result<()> {
    let (n, heads, kv_heads, d, pos0) =
        (p.n_tokens as usize, p.n_heads as usize, p.n_kv_heads as usize, p.head_dim as usize, p.pos_offset as usize);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(kernel_err("attention", "n_heads must be a multiple of n_kv_heads"));
    }
    let kv_dim = kv_heads * d;
    let ctx = pos0 + n;
    check_len("attention", "q", q.len(), n * heads * d)?;
    check_len("attention", "out", out.len(), n * heads * d)?;
    check_len("attention", "k_cache", k_cache.len(), ctx * kv_dim)?;
    check_len("attention", "v_cache", v_cache.len(), ctx * kv_dim)?;
    let group = heads / kv_heads;
    let mut scores = vec![0f64; ctx];
    for t in 0..n {
        let visible = pos0 + t + 1;
        for h in 0..heads {
            let kvh = h / group;
            let qv = &q[(t * heads + h) * d..(t * heads + h + 1) * d];
            let mut max = f64::NEG_INFINITY;
            for (j, s) in scores[..visible].iter_mut().enumerate() {
                let kv = &k_cache[j * kv_dim + kvh * d..j * kv_dim + (kvh + 1) * d];
                let dotp: f64 = qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum();
                *s = dotp * p.scale as f64;
                max = max.max(*s);
            }
            let mut denom = 0f64;
            for s in &mut scores[..visible] {
                *s = (*s - max).exp();
                denom += *s;
            }
            let o = &mut out[(t * heads + h) * d..(t * heads + h + 1) * d];
            for (i, oi) in o.iter_mut().enumerate() {
                let mut acc = 0f64;
                for (j, &s) in scores[..visible].iter().enumerate() {
                    acc += s * v_cache[j * kv_dim + kvh * d + i] as f64;
                }
                *oi = (acc / denom) as f32;
            }
        }
    }
    Ok(())
}

/// `out[t][j] = silu(gate_up[t][j]) * gate_up[t][width + j]`.
pub fn swiglu(gate_up: &[f32], out: &mut [f32], p: &SwiGluParams) -> Result<()> {
    let (n, w) = (p.n_tokens as usize, p.width as usize);
    check_len("swiglu", "gate_up", gate_up.len(), n * 2 * w)?;
    check_len("swiglu", "out", out.len(), n * w)?;
    for t in 0..n {
        let (gate, up) = gate_up[t * 2 * w..(t + 1) * 2 * w].split_at(w);
        for ((o, &g), &u) in out[t * w..(t + 1) * w].iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    }
    Ok(())
}

pub fn add(a: &mut [f32], b: &[f32], p: &ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    check_len("add", "a", a.len(), n)?;
    check_len("add", "b", b.len(), n)?;
    for (x, &y) in a[..n].iter_mut().zip(&b[..n]) {
        *x += y;
    }
    Ok(())
}

/// The order of `TopK`: a value's bits with the sign bit set for positives and all bits flipped
/// for negatives, so u32 order is float order (-0 below +0); every NaN is 0, below -inf.
pub fn top_k_key(v: f32) -> u32 {
    let bits = v.to_bits();
    if v.is_nan() {
        0
    } else if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The value bits of a `top_k_key` (a NaN for 0).
fn top_k_bits(key: u32) -> u32 {
    if key & 0x8000_0000 != 0 {
        key & 0x7fff_ffff
    } else {
        !key
    }
}

/// `TopK`: 2 k words, (id, value bits) of the k largest by `top_k_key` (lower id first on ties),
/// then (u32::MAX, a NaN) past n.
pub fn top_k(x: &[f32], p: &TopKParams) -> Result<Vec<u32>> {
    let (off, n) = (p.offset as usize, p.n as usize);
    check_len("top_k", "x", x.len(), off + n)?;
    let mut order: Vec<(u32, u32)> = x[off..off + n].iter().enumerate().map(|(i, &v)| (top_k_key(v), i as u32)).collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut out = Vec::with_capacity(2 * p.k as usize);
    for place in 0..p.k as usize {
        let (key, id) = order.get(place).copied().unwrap_or((0, u32::MAX));
        out.extend([id, top_k_bits(key)]);
    }
    Ok(out)
}

/// Index of the largest value; lowest index on ties; NaN never wins.
pub fn argmax(x: &[f32], p: &ArgmaxParams) -> Result<u32> {
    let (off, n) = (p.offset as usize, p.n as usize);
    check_len("argmax", "x", x.len(), off + n)?;
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in x[off..off + n].iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    Ok(best as u32)
}
