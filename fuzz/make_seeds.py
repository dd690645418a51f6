#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets into fuzz/corpus/<target>/ (then `cargo fuzz cmin`).

    ~/.cache/qwglm/venv/bin/python fuzz/make_seeds.py

gguf_header: the format fixture (v3, and patched to v2), the first 64 KiB of each real model
             (a header prefix: metadata, long arrays; QWGLM_MODELS or ~/.cache/qwglm/models).
safetensors: the fixture reference file and small checkpoints with every dtype family.
"""
import json
import os
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/quant"
MODELS = Path(os.environ.get("QWGLM_MODELS", Path.home() / ".cache/qwglm/models"))


def write(target: str, name: str, data: bytes):
    out = ROOT / "fuzz/corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(data)


def raw_safetensors(tensors: dict, metadata=None) -> bytes:
    """tensors: name -> (dtype string, shape, raw bytes); for dtypes numpy lacks (BF16, F8)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    fixture = (FIXTURES / "fixture.gguf").read_bytes()
    write("gguf_header", "fixture_v3.gguf", fixture)
    write("gguf_header", "fixture_v2.gguf", fixture[:4] + struct.pack("<I", 2) + fixture[8:])
    for name in ["SmolLM2-135M-Instruct.Q4_1.gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"]:
        path = MODELS / name
        if path.exists():
            with open(path, "rb") as f:
                write("gguf_header", name.replace(".gguf", ".head64k"), f.read(64 * 1024))

    write("safetensors", "fixture_ref.safetensors", (FIXTURES / "fixture_ref.safetensors").read_bytes())
    rng = np.random.default_rng(7)
    write("safetensors", "numpy_dtypes.safetensors", save({
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal((5,)).astype(np.float16),
        "i64": np.arange(4, dtype=np.int64),
        "i32": np.arange(3, dtype=np.int32),
        "u8": np.arange(6, dtype=np.uint8),
        "bool": np.array([True, False]),
        "f64": np.array([0.5]),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }, metadata={"format": "pt"}))
    write("safetensors", "bf16_fp8.safetensors", raw_safetensors({
        "model.norm.weight": ("BF16", [4], bytes.fromhex("803f0040c03f0000")),
        "model.scale": ("F8_E4M3", [2], b"\x38\x40"),
        "lm_head.weight": ("F32", [1, 2], struct.pack("<2f", 1.0, -1.0)),
    }, metadata={"total": "3"}))
    write("safetensors", "empty.safetensors", raw_safetensors({}))


if __name__ == "__main__":
    main()
