//! Text ⇄ token ids. Wraps HF `tokenizers` (so behaviour matches transformers) and adds the special-token
//! facts generation needs: BOS, the ids that end a turn, which ids are special.
//!
//! Two sources: a `tokenizer.json` (+ optional `tokenizer_config.json`), or the metadata of a GGUF file, from
//! which the byte-level BPE tokenizer is rebuilt the way llama.cpp reads it. [`Detokenizer`] turns a stream of
//! ids into text pieces without ever splitting a UTF-8 character.

use std::collections::HashSet;
use std::sync::Arc;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::SplitDelimiterBehavior;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::AddedToken;

use crate::error::{EngineError, Result};
use crate::gguf::GgufHeader;

/// Tokens that end a turn or a document in the model families we run. Generation stops on any of them
/// that the vocabulary has as a special token, besides the declared EOS.
const EOS_LIKE_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|end|>",
    "</s>",
];

/// Qwen2 split regex: single digits, letters with one leading non-letter, punctuation runs, newlines.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3 split regex: as Qwen2 but digits in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
mod token_type {
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
}

/// How text is cut into words before BPE, by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizerKind {
    Qwen2,
    Llama3,
    /// SmolLM's own tokenizer (and llama.cpp's `smollm`): every digit alone, then the GPT-2 regex.
    SmolLm,
    Gpt2,
}

impl PreTokenizerKind {
    fn from_gguf_name(name: &str) -> Result<Self> {
        Ok(match name {
            "qwen2" | "deepseek-r1-qwen" => Self::Qwen2,
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3,
            "smollm" => Self::SmolLm,
            "gpt2" | "gpt-2" | "default" => Self::Gpt2,
            other => {
                return Err(EngineError::Tokenizer(format!(
                    "unsupported GGUF pre-tokenizer `tokenizer.ggml.pre = {other}` \
                     (supported: qwen2, deepseek-r1-qwen, llama-bpe, llama3, smollm, gpt2, default)"
                )))
            }
        })
    }

    fn build(self) -> Result<PreTokenizerWrapper> {
        // Byte-level mapping after the split; the split regex (when there is one) does the word cutting.
        let byte_level = |use_regex| ByteLevel::new(false, false, use_regex);
        let split = |regex: &str| {
            Split::new(SplitPattern::Regex(regex.to_owned()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| EngineError::Tokenizer(format!("pre-tokenizer regex: {e}")))
        };
        Ok(match self {
            Self::Qwen2 => Sequence::new(vec![split(QWEN2_SPLIT)?.into(), byte_level(false).into()]).into(),
            Self::Llama3 => Sequence::new(vec![split(LLAMA3_SPLIT)?.into(), byte_level(false).into()]).into(),
            Self::SmolLm => Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into(),
            Self::Gpt2 => byte_level(true).into(),
        })
    }
}

/// A tokenizer plus the special-token facts the generator needs. Cheap to clone (shared inner tokenizer).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    bos_id: Option<u32>,
    /// The declared EOS first, then the other end-of-turn tokens the vocabulary has.
    eos_ids: Vec<u32>,
    pad_id: Option<u32>,
    /// Prepend BOS on `encode(.., add_special_tokens = true)` ourselves (the post-processor does not).
    prepend_bos: bool,
    append_eos: bool,
    /// Whether `encode(.., true)` starts with BOS, by us or by the post-processor.
    adds_bos: bool,
    special_ids: HashSet<u32>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .field("prepend_bos", &self.prepend_bos)
            .finish()
    }
}

/// Special-token declarations, wherever they came from.
#[derive(Default)]
struct SpecialTokenFacts {
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    extra_eos_ids: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
}

impl Tokenizer {
    /// From a `tokenizer.json` and, optionally, its `tokenizer_config.json` (bos/eos/pad tokens, `add_bos_token`).
    pub fn from_json(tokenizer_json: &[u8], tokenizer_config_json: Option<&[u8]>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| EngineError::Tokenizer(format!("tokenizer.json: {e}")))?;
        let mut facts = SpecialTokenFacts::default();
        if let Some(config) = tokenizer_config_json {
            let config: serde_json::Value = serde_json::from_slice(config)
                .map_err(|e| EngineError::Json { what: "tokenizer_config.json", detail: e.to_string() })?;
            let id_of = |key: &str| -> Result<Option<u32>> {
                match config_token_content(&config, key)? {
                    None => Ok(None),
                    Some(content) => inner.token_to_id(&content).map(Some).ok_or_else(|| {
                        EngineError::Tokenizer(format!("tokenizer_config.json: {key} `{content}` is not in the vocabulary"))
                    }),
                }
            };
            facts.bos_id = id_of("bos_token")?;
            facts.eos_id = id_of("eos_token")?;
            facts.pad_id = id_of("pad_token")?;
            facts.add_bos = config_bool(&config, "add_bos_token")?.unwrap_or(false);
            facts.add_eos = config_bool(&config, "add_eos_token")?.unwrap_or(false);
        }
        Ok(Self::assemble(inner, facts))
    }

    /// Rebuilds the tokenizer a GGUF file describes from its `tokenizer.ggml.*` metadata: byte-level BPE
    /// (`tokenizer.ggml.model = "gpt2"`) with the split rules named by `tokenizer.ggml.pre`; control tokens
    /// become special added tokens and user-defined ones plain added tokens, as transformers and llama.cpp do.
    pub fn from_gguf(header: &GgufHeader) -> Result<Self> {
        let meta = Metadata(header);
        let model = header.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(EngineError::Tokenizer(format!(
                "unsupported GGUF tokenizer model `tokenizer.ggml.model = {model}` (supported: gpt2, byte-level BPE)"
            )));
        }
        // Files without the key predate it; llama.cpp then uses the GPT-2 rules.
        let pre = match meta.opt_str("tokenizer.ggml.pre")? {
            Some(name) => PreTokenizerKind::from_gguf_name(name)?,
            None => PreTokenizerKind::Gpt2,
        };
        let tokens = header.get_str_array("tokenizer.ggml.tokens")?;
        let token_types = meta.opt_i32_array("tokenizer.ggml.token_type")?.unwrap_or_default();
        if !token_types.is_empty() && token_types.len() != tokens.len() {
            return Err(EngineError::corrupt(
                "GGUF tokenizer",
                format!("{} token types for {} tokens", token_types.len(), tokens.len()),
            ));
        }
        let merges = header.get_str_array("tokenizer.ggml.merges")?;

        let byte_alphabet = ByteLevel::alphabet();
        let in_alphabet = |token: &str| token.chars().all(|c| byte_alphabet.contains(&c));
        // Tokens outside the byte alphabet (a real space, say) are stored in the file as plain UTF-8 but looked
        // up by BPE in byte-level spelling. On duplicates the later id wins, as in a Python dict.
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            let spelled = if in_alphabet(token) { (*token).to_owned() } else { byte_level_spelling(token) };
            vocab.insert(spelled, id as u32);
        }
        let merges: Merges = merges
            .iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| EngineError::corrupt("GGUF tokenizer", format!("merge `{merge}` has no space")))
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| EngineError::Tokenizer(format!("GGUF vocabulary/merges: {e}")))?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre.build()?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // Control tokens spelled outside the byte alphabet are llama.cpp mislabels; transformers skips them.
        let added = |wanted: i32, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&token_types)
                .filter(|&(token, &ty)| ty == wanted && (!special || in_alphabet(token)))
                .filter(|&(token, _)| special || inner.token_to_id(token).is_some())
                .map(|(token, _)| AddedToken::from(*token, special).normalized(false))
                .collect()
        };
        let control = added(token_type::CONTROL, true);
        let user_defined = added(token_type::USER_DEFINED, false);
        inner
            .add_special_tokens(control)
            .map_err(|e| EngineError::Tokenizer(format!("GGUF control tokens: {e}")))?;
        inner
            .add_tokens(user_defined)
            .map_err(|e| EngineError::Tokenizer(format!("GGUF user-defined tokens: {e}")))?;

        let n_tokens = tokens.len();
        let id = |key: &str| -> Result<Option<u32>> {
            match meta.opt_u32(key)? {
                Some(id) if (id as usize) < n_tokens => Ok(Some(id)),
                // llama.cpp writes -1 (as u32::MAX) or out-of-range ids to mean "none".
                Some(_) | None => Ok(None),
            }
        };
        let facts = SpecialTokenFacts {
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            pad_id: id("tokenizer.ggml.padding_token_id")?,
            extra_eos_ids: [id("tokenizer.ggml.eot_token_id")?, id("tokenizer.ggml.eom_token_id")?]
                .into_iter()
                .flatten()
                .collect(),
            add_bos: meta.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            add_eos: meta.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        };
        Ok(Self::assemble(inner, facts))
    }

    fn assemble(inner: tokenizers::Tokenizer, facts: SpecialTokenFacts) -> Self {
        let special_ids: HashSet<u32> =
            inner.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        let mut eos_ids: Vec<u32> = facts.eos_id.into_iter().chain(facts.extra_eos_ids).collect();
        for token in EOS_LIKE_TOKENS {
            if let Some(id) = inner.token_to_id(token) {
                if special_ids.contains(&id) && !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        // A tokenizer.json post-processor may already add BOS/EOS (Llama 3's does); never add them twice.
        let (post_adds_bos, post_adds_eos) = match inner.encode_fast("", true) {
            Ok(encoding) => {
                let ids = encoding.get_ids();
                (
                    facts.bos_id.is_some_and(|bos| ids.first() == Some(&bos)),
                    facts.eos_id.is_some_and(|eos| ids.last() == Some(&eos)),
                )
            }
            Err(_) => (false, false),
        };
        let vocab_size = inner.get_vocab_size(true);
        Self {
            bos_id: facts.bos_id,
            eos_ids,
            pad_id: facts.pad_id,
            prepend_bos: facts.add_bos && facts.bos_id.is_some() && !post_adds_bos,
            adds_bos: post_adds_bos || (facts.add_bos && facts.bos_id.is_some()),
            append_eos: facts.add_eos && facts.eos_id.is_some() && !post_adds_eos,
            special_ids,
            vocab_size,
            inner: Arc::new(inner),
        }
    }

    /// Token ids for `text`. Special-token strings in the text (`<|im_start|>`) become their ids, as in HF.
    /// `add_special_tokens` adds what the model wants around a sequence (BOS for Llama-style models).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| EngineError::Tokenizer(format!("encode: {e}")))?;
        let mut ids = encoding.get_ids().to_vec();
        if add_special_tokens {
            if let (true, Some(bos)) = (self.prepend_bos, self.bos_id) {
                ids.insert(0, bos);
            }
            if let (true, Some(eos)) = (self.append_eos, self.eos_ids.first()) {
                ids.push(*eos);
            }
        }
        Ok(ids)
    }

    /// Text for `ids`; `skip_special` drops special tokens (`<|im_end|>`) but keeps plain added ones (`<think>`).
    /// Ids outside the vocabulary are ignored, as in HF.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| EngineError::Tokenizer(format!("decode: {e}")))
    }

    /// A streaming decoder over this tokenizer.
    pub fn detokenizer(&self, skip_special: bool) -> Detokenizer {
        Detokenizer::new(self.clone(), skip_special)
    }

    /// Number of distinct tokens, added tokens included (may be below the model's embedding rows).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Ids that end generation: the declared EOS first, then other end-of-turn specials in the vocabulary.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether `encode(.., true)` puts BOS in front.
    pub fn adds_bos(&self) -> bool {
        self.adds_bos
    }

    /// Special tokens are those `decode(.., skip_special = true)` drops.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The wrapped HF tokenizer, for anything this API does not cover.
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Streams text out of a growing list of ids. Each `push` decodes only a short window: the ids since the
/// last emitted boundary plus the few before it (whose text is cut off again), so the cost per token stays
/// constant. Text ending in U+FFFD is held back, since it may be a character whose bytes are still arriving.
/// Concatenating every piece (and `finish`) gives exactly `decode(all ids)`.
pub struct Detokenizer {
    tokenizer: Tokenizer,
    skip_special: bool,
    /// Ids from the start of the context window on.
    window: Vec<u32>,
    /// `window[..emitted]` has been emitted; the ids before it only give the decoder left context.
    emitted: usize,
    /// Text of `window[..emitted]`, which the decode of the whole window starts with.
    prefix_text: String,
}

/// After this many ids without a clean boundary (only possible with invalid UTF-8 or ids that decode to
/// nothing), `push` looks for an earlier cut so the window stays short. A character is at most 4 bytes.
const MAX_PENDING_IDS: usize = 8;

impl Detokenizer {
    fn new(tokenizer: Tokenizer, skip_special: bool) -> Self {
        Self { tokenizer, skip_special, window: Vec::new(), emitted: 0, prefix_text: String::new() }
    }

    /// Adds one id; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.window.push(id);
        let text = self.decode_window(self.window.len())?;
        if text.len() > self.prefix_text.len() && !text.ends_with(char::REPLACEMENT_CHARACTER) {
            let piece = self.new_text(&text, text.len())?;
            self.advance(self.window.len())?;
            return Ok(Some(piece));
        }
        if self.window.len() - self.emitted < MAX_PENDING_IDS {
            return Ok(None);
        }
        self.cut_earlier(&text)
    }

    /// Emits whatever is still held back (a trailing incomplete character shows as U+FFFD, as in `decode`)
    /// and resets the stream.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let text = self.decode_window(self.window.len())?;
        let piece = if text.len() > self.prefix_text.len() { Some(self.new_text(&text, text.len())?) } else { None };
        self.reset();
        Ok(piece)
    }

    pub fn reset(&mut self) {
        self.window.clear();
        self.emitted = 0;
        self.prefix_text.clear();
    }

    fn decode_window(&self, end: usize) -> Result<String> {
        self.tokenizer.decode(&self.window[..end], self.skip_special)
    }

    /// `text[prefix_text.len()..end]`, checking that the window still decodes to the emitted prefix.
    fn new_text(&self, text: &str, end: usize) -> Result<String> {
        match text.get(self.prefix_text.len()..end) {
            Some(piece) if text.starts_with(&self.prefix_text) => Ok(piece.to_owned()),
            _ => Err(EngineError::Tokenizer(format!(
                "streaming decode: window text {text:?} does not extend the emitted {:?}",
                self.prefix_text
            ))),
        }
    }

    /// Marks `window[..end]` emitted and drops the ids before the previous boundary: the ids between the old
    /// and new boundary stay as left context, so decoders that treat the first token specially agree.
    fn advance(&mut self, end: usize) -> Result<()> {
        self.window.drain(..self.emitted);
        self.emitted = end - self.emitted;
        self.prefix_text = self.decode_window(self.emitted)?;
        Ok(())
    }

    /// Many ids and still no clean end: find the latest cut whose text is a strict, stable prefix of the
    /// window's text. Bytes before the final incomplete sequence cannot change any more, and a prefix that
    /// the longer text extends with more characters ends before that sequence.
    fn cut_earlier(&mut self, text: &str) -> Result<Option<String>> {
        let text_is_final = !text.ends_with(char::REPLACEMENT_CHARACTER);
        for end in (self.emitted + 1..self.window.len()).rev() {
            let cut_text = self.decode_window(end)?;
            let stable = cut_text.len() < text.len() || (text_is_final && cut_text.len() == text.len());
            if stable && cut_text.len() >= self.prefix_text.len() && text.starts_with(&cut_text) {
                let piece = self.new_text(&cut_text, cut_text.len())?;
                self.advance(end)?;
                return Ok((!piece.is_empty()).then_some(piece));
            }
        }
        if text_is_final {
            // Everything pending decodes to nothing new (e.g. skipped specials): drop it as context.
            self.advance(self.window.len())?;
        }
        Ok(None)
    }
}

/// The GPT-2 byte-level spelling of UTF-8 text (`" "` → `"Ġ"`).
fn byte_level_spelling(text: &str) -> String {
    text.bytes().map(byte_to_char).collect()
}

/// GPT-2's reversible byte → printable char map: printable Latin-1 maps to itself, the rest to U+0100 on.
fn byte_to_char(byte: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(byte) {
        return byte as char;
    }
    let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
    char::from_u32(0x100 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// `bos_token` and friends in tokenizer_config.json: a string, an AddedToken object, or null.
fn config_token_content(config: &serde_json::Value, key: &str) -> Result<Option<String>> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Object(obj)) => match obj.get("content") {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(EngineError::Json { what: "tokenizer_config.json", detail: format!("`{key}` has no string `content`") }),
        },
        Some(_) => Err(EngineError::Json { what: "tokenizer_config.json", detail: format!("`{key}` is not a token") }),
    }
}

fn config_bool(config: &serde_json::Value, key: &str) -> Result<Option<bool>> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(EngineError::Json { what: "tokenizer_config.json", detail: format!("`{key}` is not a bool") }),
    }
}

/// Optional GGUF metadata reads: absent is `None`, present with the wrong type is an error.
struct Metadata<'a>(&'a GgufHeader);

impl<'a> Metadata<'a> {
    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.0.get(key).map(|_| self.0.get_str(key)).transpose()
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.0.get(key).map(|_| self.0.get_bool(key)).transpose()
    }

    fn opt_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        self.0.get(key).map(|_| self.0.get_i32_array(key)).transpose()
    }

    /// A token id. Negative values (llama.cpp's -1 for "none") read as `u32::MAX`, which callers treat as absent.
    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(value) => match value.as_i64() {
                Some(v) => Ok(Some(u32::try_from(v).unwrap_or(u32::MAX))),
                None => Err(EngineError::MetadataType { key: key.to_owned(), expected: "integer" }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_spelling_matches_gpt2_table() {
        assert_eq!(byte_level_spelling(" "), "Ġ");
        assert_eq!(byte_level_spelling("\n"), "Ċ");
        assert_eq!(byte_level_spelling("a b"), "aĠb");
        let alphabet = ByteLevel::alphabet();
        let all: HashSet<char> = (0..=255u8).map(byte_to_char).collect();
        assert_eq!(all.len(), 256);
        assert!(all.iter().all(|c| alphabet.contains(c)));
    }
}
