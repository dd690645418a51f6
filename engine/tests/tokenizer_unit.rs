//! Tokenizer behaviour on small synthetic vocabularies (no model files): GGUF metadata → tokenizer, special
//! tokens, BOS handling, typed errors on bad input, and the streaming Detokenizer's UTF-8 hold-back.

use engine::gguf::{GgufHeader, MetaValue};
use engine::tokenizer::Tokenizer;
use engine::EngineError;
use serde_json::json;

/// GPT-2's byte → char table (printable Latin-1 as itself, the rest from U+0100).
fn byte_char(byte: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(byte) {
        byte as char
    } else {
        char::from_u32(0x100 + (0..byte).filter(|&b| !printable(b)).count() as u32).unwrap()
    }
}

const BOS: u32 = 257;
const IM_END: u32 = 258;
const TOOL: u32 = 259;

/// 256 byte tokens, "Ġt" (merge "Ġ t"), then `<|bos|>` (control), `<|im_end|>` (control), `<tool>` (user-defined).
fn tiny_metadata() -> Vec<(String, MetaValue)> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.extend(["Ġt", "<|bos|>", "<|im_end|>", "<tool>"].map(String::from));
    let mut types = vec![1i32; 257];
    types.extend([3, 3, 4]);
    let strings = |v: Vec<String>| MetaValue::Array(v.into_iter().map(MetaValue::String).collect());
    vec![
        ("tokenizer.ggml.model".into(), MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), MetaValue::String("qwen2".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), MetaValue::Array(types.into_iter().map(MetaValue::I32).collect())),
        ("tokenizer.ggml.merges".into(), strings(vec!["Ġ t".into()])),
        ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(BOS)),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(IM_END)),
        ("tokenizer.ggml.padding_token_id".into(), MetaValue::I32(-1)),
    ]
}

fn header(metadata: Vec<(String, MetaValue)>) -> GgufHeader {
    GgufHeader { version: 3, metadata, tensors: vec![], alignment: 32, data_offset: 0 }
}

fn with(mut metadata: Vec<(String, MetaValue)>, key: &str, value: Option<MetaValue>) -> Vec<(String, MetaValue)> {
    metadata.retain(|(k, _)| k != key);
    if let Some(value) = value {
        metadata.push((key.to_owned(), value));
    }
    metadata
}

fn tiny() -> Tokenizer {
    Tokenizer::from_gguf(&header(tiny_metadata())).unwrap()
}

fn byte_id(b: u8) -> u32 {
    b as u32
}

#[test]
fn builds_byte_level_bpe_from_gguf_metadata() {
    let tok = tiny();
    assert_eq!(tok.vocab_size(), 260);
    assert_eq!(tok.encode(" t", false).unwrap(), vec![256]);
    assert_eq!(tok.encode("🦀", false).unwrap(), "🦀".bytes().map(byte_id).collect::<Vec<_>>());
    // Special strings in text are matched whole, plain added tokens too.
    let ids = tok.encode("a<|im_end|>b<tool>", false).unwrap();
    assert_eq!(ids, vec![byte_id(b'a'), IM_END, byte_id(b'b'), TOOL]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "a<|im_end|>b<tool>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "ab<tool>");
    assert!(tok.is_special(IM_END) && tok.is_special(BOS) && !tok.is_special(TOOL) && !tok.is_special(97));
    assert_eq!(tok.bos_id(), Some(BOS));
    assert_eq!(tok.eos_ids(), &[IM_END]);
    assert_eq!(tok.pad_id(), None, "-1 means no padding token");
    assert_eq!(tok.token_to_id("<tool>"), Some(TOOL));
    assert_eq!(tok.id_to_token(256).as_deref(), Some("Ġt"));
    // Without add_bos_token nothing is added; with it, BOS leads exactly once.
    assert!(!tok.adds_bos());
    assert_eq!(tok.encode("a", true).unwrap(), vec![97]);
    let with_bos = Tokenizer::from_gguf(&header(with(
        tiny_metadata(),
        "tokenizer.ggml.add_bos_token",
        Some(MetaValue::Bool(true)),
    )))
    .unwrap();
    assert!(with_bos.adds_bos());
    assert_eq!(with_bos.encode("a", true).unwrap(), vec![BOS, 97]);
    assert_eq!(with_bos.encode("a", false).unwrap(), vec![97]);
}

#[test]
fn each_supported_pre_tokenizer_builds() {
    for pre in ["qwen2", "llama-bpe", "smollm", "gpt2", "default", "deepseek-r1-qwen"] {
        let tok = Tokenizer::from_gguf(&header(with(
            tiny_metadata(),
            "tokenizer.ggml.pre",
            Some(MetaValue::String(pre.into())),
        )))
        .unwrap_or_else(|e| panic!("{pre}: {e}"));
        let text = "It's 2025:  tabs\t\r\n and  12345 🦀";
        assert_eq!(tok.decode(&tok.encode(text, false).unwrap(), false).unwrap(), text, "{pre}");
    }
    // Older files without the key get the GPT-2 rules.
    assert!(Tokenizer::from_gguf(&header(with(tiny_metadata(), "tokenizer.ggml.pre", None))).is_ok());
}

#[test]
fn bad_gguf_metadata_is_a_typed_error() {
    let err = |metadata| Tokenizer::from_gguf(&header(metadata)).unwrap_err();

    assert!(matches!(err(with(tiny_metadata(), "tokenizer.ggml.model", None)), EngineError::MissingMetadata(k) if k == "tokenizer.ggml.model"));
    assert!(matches!(err(with(tiny_metadata(), "tokenizer.ggml.tokens", None)), EngineError::MissingMetadata(_)));
    assert!(matches!(err(with(tiny_metadata(), "tokenizer.ggml.merges", None)), EngineError::MissingMetadata(_)));
    let e = err(with(tiny_metadata(), "tokenizer.ggml.model", Some(MetaValue::String("llama".into()))));
    assert!(matches!(&e, EngineError::Tokenizer(m) if m.contains("unsupported GGUF tokenizer model")), "{e}");
    let e = err(with(tiny_metadata(), "tokenizer.ggml.pre", Some(MetaValue::String("tekken".into()))));
    assert!(matches!(&e, EngineError::Tokenizer(m) if m.contains("unsupported GGUF pre-tokenizer") && m.contains("tekken")), "{e}");
    assert!(matches!(
        err(with(tiny_metadata(), "tokenizer.ggml.tokens", Some(MetaValue::String("x".into())))),
        EngineError::MetadataType { .. }
    ));
    assert!(matches!(
        err(with(tiny_metadata(), "tokenizer.ggml.model", Some(MetaValue::U32(2)))),
        EngineError::MetadataType { .. }
    ));
    assert!(matches!(
        err(with(tiny_metadata(), "tokenizer.ggml.token_type", Some(MetaValue::Array(vec![MetaValue::I32(1)])))),
        EngineError::Corrupt { .. }
    ));
    assert!(matches!(
        err(with(tiny_metadata(), "tokenizer.ggml.bos_token_id", Some(MetaValue::String("1".into())))),
        EngineError::MetadataType { .. }
    ));
    let merges = |m: &str| Some(MetaValue::Array(vec![MetaValue::String(m.into())]));
    assert!(matches!(err(with(tiny_metadata(), "tokenizer.ggml.merges", merges("Ġt"))), EngineError::Corrupt { .. }));
    assert!(matches!(err(with(tiny_metadata(), "tokenizer.ggml.merges", merges("zz qq"))), EngineError::Tokenizer(_)));
    // Out-of-range special ids are ignored rather than trusted.
    let odd = Tokenizer::from_gguf(&header(with(tiny_metadata(), "tokenizer.ggml.bos_token_id", Some(MetaValue::U32(9999))))).unwrap();
    assert_eq!(odd.bos_id(), None);
}

#[test]
fn from_json_reads_special_tokens_from_the_config() {
    let json = tiny().hf().to_string(false).unwrap();
    let config = json!({"bos_token": "<|bos|>", "eos_token": {"content": "<|im_end|>"}, "pad_token": null, "add_bos_token": true});
    let tok = Tokenizer::from_json(json.as_bytes(), Some(config.to_string().as_bytes())).unwrap();
    assert_eq!((tok.bos_id(), tok.eos_ids(), tok.pad_id()), (Some(BOS), &[IM_END][..], None));
    assert_eq!(tok.encode("a", true).unwrap(), vec![BOS, 97]);
    let plain = Tokenizer::from_json(json.as_bytes(), None).unwrap();
    assert_eq!(plain.bos_id(), None);
    assert_eq!(plain.eos_ids(), &[IM_END], "eos-like specials are found without a config");

    // A post-processor that already adds BOS (Llama 3 style) is not doubled.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["post_processor"] = json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [BOS], "tokens": ["<|bos|>"]}}
    });
    let llama3 = Tokenizer::from_json(value.to_string().as_bytes(), Some(config.to_string().as_bytes())).unwrap();
    assert_eq!(llama3.encode("a", true).unwrap(), vec![BOS, 97]);
    assert!(llama3.adds_bos());
}

#[test]
fn bad_json_is_a_typed_error() {
    assert!(matches!(Tokenizer::from_json(b"{not json", None), Err(EngineError::Tokenizer(_))));
    assert!(matches!(Tokenizer::from_json(br#"{"model": {"type": "BPE"}}"#, None), Err(EngineError::Tokenizer(_))));
    let json = tiny().hf().to_string(false).unwrap();
    assert!(matches!(Tokenizer::from_json(json.as_bytes(), Some(b"[1,")), Err(EngineError::Json { .. })));
    let unknown_bos = br#"{"bos_token": "<s>"}"#;
    assert!(matches!(Tokenizer::from_json(json.as_bytes(), Some(unknown_bos)), Err(EngineError::Tokenizer(_))));
    let wrong_type = br#"{"add_bos_token": "yes"}"#;
    assert!(matches!(Tokenizer::from_json(json.as_bytes(), Some(wrong_type)), Err(EngineError::Json { .. })));
}

fn pieces(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<Option<String>> {
    let mut detok = tok.detokenizer(skip_special);
    let mut out: Vec<Option<String>> = ids.iter().map(|&id| detok.push(id).unwrap()).collect();
    out.push(detok.finish().unwrap());
    out
}

fn joined(pieces: &[Option<String>]) -> String {
    pieces.iter().flatten().cloned().collect()
}

#[test]
fn detokenizer_holds_back_split_characters() {
    let tok = tiny();
    // An emoji arriving one byte token at a time comes out whole, once.
    let crab: Vec<u32> = "🦀".bytes().map(byte_id).collect();
    assert_eq!(pieces(&tok, &crab, false), vec![None, None, None, Some("🦀".into()), None]);

    let text = "héllo 👍🏽 wörld <tool> 日本";
    let ids = tok.encode(text, false).unwrap();
    let got = pieces(&tok, &ids, false);
    assert_eq!(joined(&got), text);
    assert!(got.iter().flatten().all(|p| !p.contains('\u{FFFD}')));

    // A character cut off at the end shows as U+FFFD only on finish, exactly as decode shows it.
    let cut = [byte_id(b'a'), 0xF0, 0x9F];
    let got = pieces(&tok, &cut, false);
    assert_eq!(got, vec![Some("a".into()), None, None, Some("\u{FFFD}".into())]);
    assert_eq!(joined(&got), tok.decode(&cut, false).unwrap());
}

#[test]
fn detokenizer_survives_invalid_utf8_and_silent_tokens() {
    let tok = tiny();
    // 30 stray continuation bytes, then a character split across tokens, then text.
    let mut ids: Vec<u32> = vec![0x80; 30];
    ids.extend("é!".bytes().map(byte_id));
    ids.extend([0xFF, 0xF0, 0x9F, 0x98]);
    ids.extend("😀 ok".bytes().map(byte_id));
    let got = pieces(&tok, &ids, false);
    assert_eq!(joined(&got), tok.decode(&ids, false).unwrap());
    // The garbage is released before the stream ends (bounded window), not all at finish.
    assert!(got[..30].iter().any(Option::is_some));

    // Skipped specials decode to nothing; the stream still matches and keeps going.
    let mut ids = vec![IM_END; 25];
    ids.extend(tok.encode("hi <|bos|> there", false).unwrap());
    for skip_special in [true, false] {
        assert_eq!(joined(&pieces(&tok, &ids, skip_special)), tok.decode(&ids, skip_special).unwrap());
    }

    // Reuse after finish starts clean.
    let mut detok = tok.detokenizer(false);
    assert_eq!(detok.push(0xF0).unwrap(), None);
    assert_eq!(detok.finish().unwrap().as_deref(), Some("\u{FFFD}"));
    assert_eq!(detok.push(byte_id(b'x')).unwrap().as_deref(), Some("x"));
}

#[test]
fn tokenizer_and_template_can_move_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
    send_sync::<engine::tokenizer::Detokenizer>();
    send_sync::<engine::chat::ChatTemplate>();
}
