//! Chat templates: a conversation (OpenAI-style messages) → the prompt string the model was trained on.
//!
//! Templates are Jinja, written for Python's jinja2 and rendered by transformers' `apply_chat_template`.
//! We compile them once with minijinja and match transformers' environment: `trim_blocks` + `lstrip_blocks`,
//! Python string/dict methods (`.strip()`, `.split()`, `.items()`), a `tojson` that writes what Python's
//! `json.dumps` writes, `raise_exception`, `strftime_now`, and loop controls.

use std::fmt::Write as _;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{EngineError, Result};
use crate::gguf::{GgufHeader, MetaValue};

const TEMPLATE_NAME: &str = "chat";

/// transformers' fallback when a model ships no template (also what SmolLM2 and Qwen use, minus defaults).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One message of a conversation, shaped like the OpenAI chat API so a `messages` JSON file deserialises
/// directly. `content` may be a string, `null` (read as empty) or a list of `{"type": "text", "text": ..}` parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
    /// The model's reasoning for an assistant turn (Qwen3 renders it inside `<think>`); also read from
    /// `thinking` or `reasoning`, the other names in use.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "thinking", alias = "reasoning")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into(), ..Self::default() }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// A tool's answer to a call.
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new("tool", content)
    }

    /// What the template sees. Absent optional fields stay absent (templates test `is defined`), and
    /// reasoning is offered under both names templates read, as transformers does.
    fn to_template_value(&self) -> Value {
        let mut fields: Vec<(&str, Value)> = vec![("role", Value::from(self.role.as_str()))];
        fields.push(("content", Value::from(self.content.as_str())));
        if let Some(reasoning) = &self.reasoning_content {
            fields.push(("reasoning_content", Value::from(reasoning.as_str())));
            fields.push(("thinking", Value::from(reasoning.as_str())));
        }
        if let Some(calls) = &self.tool_calls {
            fields.push(("tool_calls", Value::from(calls.iter().map(ToolCall::to_template_value).collect::<Vec<_>>())));
        }
        if let Some(name) = &self.name {
            fields.push(("name", Value::from(name.as_str())));
        }
        if let Some(id) = &self.tool_call_id {
            fields.push(("tool_call_id", Value::from(id.as_str())));
        }
        Value::from_pairs(fields)
    }
}

/// An assistant's request to call a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON object (rendered with `tojson`) or, as the OpenAI API sends it, a string holding JSON.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

fn function_kind() -> String {
    "function".to_owned()
}

impl ToolCall {
    fn to_template_value(&self) -> Value {
        let function = Value::from_pairs([
            ("name", Value::from(self.function.name.as_str())),
            ("arguments", Value::from(Serde(&self.function.arguments))),
        ]);
        let mut fields: Vec<(&str, Value)> = Vec::new();
        if let Some(id) = &self.id {
            fields.push(("id", Value::from(id.as_str())));
        }
        fields.push(("type", Value::from(self.kind.as_str())));
        fields.push(("function", function));
        Value::from_pairs(fields)
    }
}

/// `content` as the OpenAI API allows it: a string, null, or a list of text parts.
fn content_text<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<ContentPart>),
        Null(()),
    }
    #[derive(Deserialize)]
    struct ContentPart {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        text: Option<String>,
    }
    match Content::deserialize(deserializer)? {
        Content::Text(text) => Ok(text),
        Content::Null(()) => Ok(String::new()),
        Content::Parts(parts) => parts
            .into_iter()
            .map(|part| match (part.kind.as_str(), part.text) {
                ("text", Some(text)) => Ok(text),
                (kind, _) => Err(serde::de::Error::custom(format!("unsupported content part `{kind}` (only text)"))),
            })
            .collect(),
    }
}

/// Per-render choices.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// End with the header of an assistant turn, so the model answers next.
    pub add_generation_prompt: bool,
    /// Qwen3's switch; `None` leaves the variable undefined (the template's default: thinking on).
    pub enable_thinking: Option<bool>,
    /// Function schemas (OpenAI `tools` entries); key order is kept.
    pub tools: Option<Vec<serde_json::Value>>,
    /// Seconds since the Unix epoch for `strftime_now` (UTC). `None`: the system clock natively; on wasm32,
    /// which has none, `strftime_now` is left undefined and templates use their own default date.
    pub now_unix_secs: Option<i64>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    is_fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("is_fallback", &self.is_fallback)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the strings templates see as `bos_token`/`eos_token`.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| EngineError::Template(format!("syntax config: {e}")))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, without_generation_tags(source))
            .map_err(|e| EngineError::Template(describe(&e)))?;
        Ok(Self {
            env,
            source: source.to_owned(),
            bos_token: bos_token.map(str::to_owned),
            eos_token: eos_token.map(str::to_owned),
            is_fallback: false,
        })
    }

    /// The ChatML template, for models that ship none.
    pub fn chatml(bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut template = Self::new(CHATML_TEMPLATE, bos_token, eos_token)?;
        template.is_fallback = true;
        Ok(template)
    }

    /// From a `tokenizer_config.json`: its `chat_template` (a string, or a list of `{name, template}` from
    /// which "default" is taken) and its bos/eos tokens. No template: ChatML.
    pub fn from_tokenizer_config(json: &[u8]) -> Result<Self> {
        let config: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| EngineError::Json { what: "tokenizer_config.json", detail: e.to_string() })?;
        let token = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
            _ => None,
        };
        let (bos, eos) = (token("bos_token"), token("eos_token"));
        match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => Self::chatml(bos.as_deref(), eos.as_deref()),
            Some(serde_json::Value::String(source)) => Self::new(source, bos.as_deref(), eos.as_deref()),
            Some(serde_json::Value::Array(named)) => {
                let mut names = Vec::new();
                for entry in named {
                    let name = entry.get("name").and_then(|n| n.as_str());
                    let source = entry.get("template").and_then(|t| t.as_str());
                    match (name, source) {
                        (Some("default"), Some(source)) => return Self::new(source, bos.as_deref(), eos.as_deref()),
                        (Some(name), Some(_)) => names.push(name.to_owned()),
                        _ => {
                            return Err(EngineError::Template(
                                "tokenizer_config.json: chat_template list entries need `name` and `template`".into(),
                            ))
                        }
                    }
                }
                Err(EngineError::Template(format!("tokenizer_config.json: no chat template named `default` (has {names:?})")))
            }
            Some(_) => Err(EngineError::Template("tokenizer_config.json: `chat_template` is not a string or list".into())),
        }
    }

    /// From GGUF metadata: `tokenizer.chat_template`, with bos/eos spelled from the token list. No template: ChatML.
    pub fn from_gguf(header: &GgufHeader) -> Result<Self> {
        // Missing or odd ids only cost the `bos_token`/`eos_token` variables, which few templates use.
        let token_text = |id_key: &str| -> Option<String> {
            let id = usize::try_from(header.get(id_key)?.as_u64()?).ok()?;
            match header.get("tokenizer.ggml.tokens")? {
                MetaValue::Array(tokens) => tokens.get(id)?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        let bos = token_text("tokenizer.ggml.bos_token_id");
        let eos = token_text("tokenizer.ggml.eos_token_id");
        match header.get("tokenizer.chat_template") {
            None => Self::chatml(bos.as_deref(), eos.as_deref()),
            Some(MetaValue::String(source)) => Self::new(source, bos.as_deref(), eos.as_deref()),
            Some(_) => Err(EngineError::MetadataType { key: "tokenizer.chat_template".into(), expected: "string" }),
        }
    }

    /// Whether this is the ChatML stand-in rather than the model's own template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The prompt for `messages`, as transformers' `apply_chat_template(.., tokenize=False)` renders it.
    pub fn render(&self, messages: &[ChatMessage], options: &RenderOptions) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| EngineError::Template(describe(&e)))?;
        let messages: Vec<Value> = messages.iter().map(ChatMessage::to_template_value).collect();
        let tools = match &options.tools {
            Some(tools) => Value::from(tools.iter().map(|tool| Value::from(Serde(tool))).collect::<Vec<_>>()),
            None => Value::from(()),
        };
        let mut context: Vec<(&str, Value)> = vec![
            ("messages", Value::from(messages)),
            ("tools", tools),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(options.add_generation_prompt)),
        ];
        if let Some(bos) = &self.bos_token {
            context.push(("bos_token", Value::from(bos.as_str())));
        }
        if let Some(eos) = &self.eos_token {
            context.push(("eos_token", Value::from(eos.as_str())));
        }
        if let Some(enable_thinking) = options.enable_thinking {
            context.push(("enable_thinking", Value::from(enable_thinking)));
        }
        if let Some(now) = options.now_unix_secs.or_else(system_unix_secs) {
            context.push(("strftime_now", Value::from_function(move |format: &str| strftime(format, now))));
        }
        template.render(Value::from_pairs(context)).map_err(|e| EngineError::Template(describe(&e)))
    }
}

/// An error with its template location and cause, on one line.
fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("template raised an exception: {message}")))
}

/// `{% generation %}…{% endgeneration %}` (transformers' assistant-mask tag) only marks text; keep the body.
/// Rewritten to an always-true `if` so whitespace control around the tags behaves as for any block tag.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (open_mark, body) = split_marker(inner, true);
        let (close_mark, body) = split_marker(body, false);
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(keyword) => {
                let _ = write!(out, "{{%{open_mark} {keyword} {close_mark}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Splits a leading (or trailing) `-`/`+` whitespace-control marker off a tag body.
fn split_marker(body: &str, leading: bool) -> (&str, &str) {
    let marker = |c: char| c == '-' || c == '+';
    if leading {
        match body.chars().next() {
            Some(c) if marker(c) => (&body[..1], &body[1..]),
            _ => ("", body),
        }
    } else {
        match body.chars().last() {
            Some(c) if marker(c) => (&body[body.len() - 1..], &body[..body.len() - 1]),
            _ => ("", body),
        }
    }
}

/// transformers' `tojson`: Python `json.dumps(x, ensure_ascii=False)` with its optional `indent`,
/// `separators`, `sort_keys` and `ensure_ascii` (jinja2's own escapes HTML characters, which prompts must not).
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.clamp(0, 64) as usize)),
            (None, Some(s)) => Some(s.to_owned()),
            _ => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: indent must be int or str")),
        },
    };
    let separators: Option<Value> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators {
        Some(seps) if !seps.is_none() => {
            let item = seps.get_item_by_index(0)?;
            let key = seps.get_item_by_index(1)?;
            match (item.as_str(), key.as_str()) {
                (Some(item), Some(key)) => (item.to_owned(), key.to_owned()),
                _ => {
                    return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings"))
                }
            }
        }
        // Python drops the space after "," when indenting, since a newline follows.
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    style.write(&mut out, value, 0)?;
    Ok(Value::from(out))
}

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl JsonStyle {
    fn write(&self, out: &mut String, value: &Value, depth: usize) -> std::result::Result<(), minijinja::Error> {
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if value.is_integer() {
                    let _ = write!(out, "{value}");
                } else {
                    let float = f64::try_from(value.clone())?;
                    out.push_str(&python_float_repr(float));
                }
            }
            ValueKind::String => self.write_str(out, value.as_str().unwrap_or_default()),
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                self.write_container(out, '{', '}', &keys, depth, |out, key| {
                    match key.as_str() {
                        Some(s) => self.write_str(out, s),
                        // Python turns scalar keys into strings: 1 → "1", True → "true", None → "null".
                        None => {
                            let mut scalar = String::new();
                            self.write(&mut scalar, key, depth + 1)?;
                            self.write_str(out, &scalar);
                        }
                    }
                    out.push_str(&self.key_sep);
                    self.write(out, &value.get_item(key)?, depth + 1)
                })?;
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container(out, '[', ']', &items, depth, |out, item| self.write(out, item, depth + 1))?;
            }
            // Objects without JSON shape: their string form, as a JSON string.
            _ => self.write_str(out, &value.to_string()),
        }
        Ok(())
    }

    fn write_container(
        &self,
        out: &mut String,
        open: char,
        close: char,
        items: &[Value],
        depth: usize,
        mut write_item: impl FnMut(&mut String, &Value) -> std::result::Result<(), minijinja::Error>,
    ) -> std::result::Result<(), minijinja::Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            if let Some(indent) = &self.indent {
                out.push('\n');
                out.push_str(&indent.repeat(depth + 1));
            }
            write_item(out, item)?;
        }
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth));
        }
        out.push(close);
        Ok(())
    }

    fn write_str(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e-7".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn system_unix_secs() -> Option<i64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(now.as_secs()).ok()
}

/// wasm32-unknown-unknown has no clock (`SystemTime::now` panics there); the host passes `now_unix_secs`.
#[cfg(target_arch = "wasm32")]
fn system_unix_secs() -> Option<i64> {
    None
}

/// A C/Python `strftime` over UTC for the directives chat templates use; others pass through unchanged.
pub fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1) as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(directive) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match directive {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:2}"),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{hour12:02}"),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            'B' => write!(out, "{month_name}"),
            'b' | 'h' => write!(out, "{}", &month_name[..3]),
            'A' => write!(out, "{}", WEEKDAYS[weekday]),
            'a' => write!(out, "{}", &WEEKDAYS[weekday][..3]),
            'j' => write!(out, "{day_of_year:03}"),
            'F' => write!(out, "{year}-{month:02}-{day:02}"),
            'D' => write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'T' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            'Z' => write!(out, "UTC"),
            'z' => write!(out, "+0000"),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr_matches_python() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (1e-7, "1e-07"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.5e300, "1.5e+300"),
            (100.0, "100.0"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn strftime_formats_utc() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(strftime("%A %B %e, %H:%M:%S %p %j %%", t), "Friday July 26, 13:05:09 PM 208 %");
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
        assert_eq!(strftime("%F", 951_782_400), "2000-02-29");
        assert_eq!(strftime("%q", 0), "%q");
    }

    #[test]
    fn generation_tags_become_plain_blocks() {
        let src = "a{%- generation -%}b{% endgeneration %}c{% if x %}{% endif %}";
        assert_eq!(without_generation_tags(src), "a{%- if true -%}b{% endif %}c{% if x %}{% endif %}");
    }
}
