//! Chat templates against transformers' `apply_chat_template(tokenize=False)`: 180 cases over the Qwen2.5,
//! SmolLM2 and Qwen3 templates (tests/fixtures/chat/, made by make_chat_refs.py), plus the environment details
//! (tojson, raise_exception, strftime_now, Python methods, fallbacks, errors).

use std::path::{Path, PathBuf};

use engine::chat::{ChatMessage, ChatTemplate, RenderOptions};
use engine::EngineError;
use serde::Deserialize;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat")
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn template(name: &str) -> ChatTemplate {
    match name {
        "qwen2.5" => {
            let source = String::from_utf8(read_fixture("qwen2.5.jinja")).unwrap();
            ChatTemplate::new(&source, Some("<|endoftext|>"), Some("<|im_end|>")).unwrap()
        }
        "smollm2" => {
            let source = String::from_utf8(read_fixture("smollm2.jinja")).unwrap();
            ChatTemplate::new(&source, Some("<|im_start|>"), Some("<|im_end|>")).unwrap()
        }
        "qwen3" => ChatTemplate::from_tokenizer_config(&read_fixture("qwen3_tokenizer_config.json")).unwrap(),
        other => panic!("unknown template {other}"),
    }
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    template: String,
    messages: Vec<ChatMessage>,
    tools: Option<Vec<serde_json::Value>>,
    add_generation_prompt: bool,
    enable_thinking: Option<bool>,
    expected: String,
}

fn first_difference(a: &str, b: &str) -> String {
    let at = a.char_indices().zip(b.chars()).find(|((_, x), y)| x != y).map(|((i, _), _)| i).unwrap_or(a.len().min(b.len()));
    let start = a[..at].char_indices().rev().nth(40).map_or(0, |(i, _)| i);
    format!("at byte {at}: ours {:?} vs expected {:?}", &a[start..(at + 40).min(a.len())], &b[start..(at + 40).min(b.len())])
}

#[test]
fn renders_exactly_like_transformers() {
    let cases: Cases = serde_json::from_slice(&read_fixture("cases.json")).unwrap();
    assert_eq!(cases.cases.len(), 180);
    let templates: Vec<(&str, ChatTemplate)> =
        ["qwen2.5", "smollm2", "qwen3"].into_iter().map(|name| (name, template(name))).collect();
    let mut failures = Vec::new();
    for case in &cases.cases {
        let template = &templates.iter().find(|(name, _)| *name == case.template).unwrap().1;
        let options = RenderOptions {
            add_generation_prompt: case.add_generation_prompt,
            enable_thinking: case.enable_thinking,
            tools: case.tools.clone(),
            now_unix_secs: None,
        };
        match template.render(&case.messages, &options) {
            Ok(rendered) if rendered == case.expected => {}
            Ok(rendered) => failures.push(format!("{}: {}", case.name, first_difference(&rendered, &case.expected))),
            Err(e) => failures.push(format!("{}: error {e}", case.name)),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.cases.len(), failures.join("\n"));
}

fn models_dir() -> PathBuf {
    match std::env::var_os("QWGLM_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/qwglm/models"),
    }
}

/// The GGUF header holds the template; read just the header, growing the prefix on `Truncated`.
fn gguf_header(file: &str) -> engine::gguf::GgufHeader {
    use std::io::Read;
    let path = models_dir().join(file);
    assert!(path.is_file(), "missing model file {}: run `scripts/fetch-models.sh` first (or set QWGLM_MODELS)", path.display());
    let file_len = std::fs::metadata(&path).unwrap().len();
    let mut want = (16u64 << 20).min(file_len);
    loop {
        let mut prefix = Vec::new();
        std::fs::File::open(&path).unwrap().take(want).read_to_end(&mut prefix).unwrap();
        match engine::gguf::GgufHeader::parse_prefix(&prefix, file_len) {
            Ok(header) => return header,
            Err(EngineError::Truncated { offset, needed, .. }) if want < file_len => {
                want = (offset + needed).max(want * 2).min(file_len)
            }
            Err(e) => panic!("{file}: {e}"),
        }
    }
}

#[test]
fn gguf_templates_are_the_fixture_templates() {
    for (file, fixture, bos, eos) in [
        ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5.jinja", "<|endoftext|>", "<|im_end|>"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2.jinja", "<|im_start|>", "<|im_end|>"),
    ] {
        let template = ChatTemplate::from_gguf(&gguf_header(file)).unwrap();
        assert!(!template.is_fallback());
        assert_eq!(template.source().as_bytes(), read_fixture(fixture), "{file}");
        // bos/eos as the template sees them, spelled from the GGUF token list.
        let probe = ChatTemplate::new("{{ bos_token }}|{{ eos_token }}", Some(bos), Some(eos)).unwrap();
        let from_gguf = ChatTemplate::from_gguf(&{
            let mut header = gguf_header(file);
            for (key, value) in &mut header.metadata {
                if key == "tokenizer.chat_template" {
                    *value = engine::gguf::MetaValue::String(probe.source().to_owned());
                }
            }
            header
        })
        .unwrap();
        let no_messages = RenderOptions::default();
        assert_eq!(from_gguf.render(&[], &no_messages).unwrap(), format!("{bos}|{eos}"));
    }
}

#[test]
fn chatml_fallback_when_no_template() {
    let template = ChatTemplate::from_tokenizer_config(br#"{"bos_token": null, "eos_token": "<|im_end|>"}"#).unwrap();
    assert!(template.is_fallback());
    let messages = [ChatMessage::system("Be brief."), ChatMessage::user("Hi"), ChatMessage::assistant("Hello")];
    let rendered = template.render(&messages, &RenderOptions { add_generation_prompt: true, ..Default::default() }).unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
    let header = engine::gguf::GgufHeader { version: 3, metadata: vec![], tensors: vec![], alignment: 32, data_offset: 0 };
    assert!(ChatTemplate::from_gguf(&header).unwrap().is_fallback());
}

#[test]
fn named_template_list_picks_default() {
    let config = json!({
        "eos_token": {"content": "</s>", "special": true},
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "{{ messages[0].content }}{{ eos_token }}"}
        ]
    });
    let template = ChatTemplate::from_tokenizer_config(config.to_string().as_bytes()).unwrap();
    assert_eq!(template.render(&[ChatMessage::user("x")], &RenderOptions::default()).unwrap(), "x</s>");

    let no_default = json!({"chat_template": [{"name": "tool_use", "template": "T"}]});
    let err = ChatTemplate::from_tokenizer_config(no_default.to_string().as_bytes()).unwrap_err();
    assert!(matches!(&err, EngineError::Template(m) if m.contains("default")), "{err}");
}

#[test]
fn errors_are_typed() {
    assert!(matches!(ChatTemplate::new("{% if %}", None, None), Err(EngineError::Template(_))));
    assert!(matches!(ChatTemplate::new("{{ x ", None, None), Err(EngineError::Template(_))));
    assert!(matches!(ChatTemplate::from_tokenizer_config(b"{not json"), Err(EngineError::Json { .. })));
    assert!(matches!(ChatTemplate::from_tokenizer_config(br#"{"chat_template": 5}"#), Err(EngineError::Template(_))));

    let raising = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user turn!') }}{% endif %}ok",
        None,
        None,
    )
    .unwrap();
    let err = raising.render(&[ChatMessage::assistant("hi")], &RenderOptions::default()).unwrap_err();
    assert!(matches!(&err, EngineError::Template(m) if m.contains("Conversation must start with a user turn!")), "{err}");
    assert_eq!(raising.render(&[ChatMessage::user("hi")], &RenderOptions::default()).unwrap(), "ok");

    // A template indexing into an empty conversation fails cleanly, like jinja2.
    let qwen = template("qwen2.5");
    assert!(matches!(qwen.render(&[], &RenderOptions::default()), Err(EngineError::Template(_))));
}

#[test]
fn tojson_writes_what_python_json_dumps_writes() {
    let value = json!({"b": [1, 2.5, {"c": null}], "a": "é\"\n", "e": [], "f": {}, "g": true});
    let render = |source: &str, tools: serde_json::Value| {
        let options = RenderOptions { tools: Some(vec![tools]), ..Default::default() };
        ChatTemplate::new(source, None, None).unwrap().render(&[], &options).unwrap()
    };
    assert_eq!(
        render("{{ tools[0] | tojson(indent=2) }}", value.clone()),
        "{\n  \"b\": [\n    1,\n    2.5,\n    {\n      \"c\": null\n    }\n  ],\n  \"a\": \"é\\\"\\n\",\n  \"e\": [],\n  \"f\": {},\n  \"g\": true\n}"
    );
    assert_eq!(
        render("{{ tools[0] | tojson(sort_keys=true) }}", value.clone()),
        "{\"a\": \"é\\\"\\n\", \"b\": [1, 2.5, {\"c\": null}], \"e\": [], \"f\": {}, \"g\": true}"
    );
    assert_eq!(
        render("{{ tools[0] | tojson(ensure_ascii=true, separators=[',', ':']) }}", value),
        "{\"b\":[1,2.5,{\"c\":null}],\"a\":\"\\u00e9\\\"\\n\",\"e\":[],\"f\":{},\"g\":true}"
    );
    assert_eq!(render("{{ tools[0] | tojson(ensure_ascii=true) }}", json!("🦀\u{1}")), "\"\\ud83e\\udd80\\u0001\"");
    // HTML characters stay as they are (jinja2's own tojson would escape them).
    assert_eq!(render("{{ tools[0] | tojson }}", json!("<b>&'</b>")), "\"<b>&'</b>\"");
}

#[test]
fn python_methods_loop_controls_and_generation_tags() {
    let source = "{%- for m in messages -%}\
        {%- if loop.index0 == 2 %}{% break %}{% endif -%}\
        {% generation %}{{ m.content.strip().upper() }}|{{ m.content.split(',')[-1].lstrip() }}|{{ m.content.startswith(' a') }}{% endgeneration %};\
        {%- endfor -%}\
        {%- for k, v in {'x': 1}.items() %}{{ k }}={{ v }}{% endfor %}";
    let template = ChatTemplate::new(source, None, None).unwrap();
    let messages = [ChatMessage::user(" a, b "), ChatMessage::user("c"), ChatMessage::user("never")];
    // Same output as jinja2 (booleans print the Python way).
    assert_eq!(template.render(&messages, &RenderOptions::default()).unwrap(), "A, B|b |True;C|c|False;x=1");
}

#[test]
fn strftime_now_uses_the_given_clock() {
    let template = ChatTemplate::new(
        "{% if strftime_now is defined %}{{ strftime_now('%d %b %Y') }}{% else %}26 Jul 2024{% endif %}",
        None,
        None,
    )
    .unwrap();
    // 2025-01-02 00:00:00 UTC
    let options = RenderOptions { now_unix_secs: Some(1_735_776_000), ..Default::default() };
    assert_eq!(template.render(&[], &options).unwrap(), "02 Jan 2025");
    // Natively the system clock stands in: a date, four-digit year last.
    let today = template.render(&[], &RenderOptions::default()).unwrap();
    assert!(today.len() == 11 && today[7..].parse::<u32>().unwrap() >= 2025, "{today}");
}

#[test]
fn openai_style_messages_deserialise() {
    let file = json!([
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "name": "f", "content": "42"},
        {"role": "assistant", "content": "done", "thinking": "hmm"}
    ]);
    let messages: Vec<ChatMessage> = serde_json::from_value(file).unwrap();
    assert_eq!(messages[1].content, "part one, part two");
    assert_eq!(messages[2].content, "");
    let call = &messages[2].tool_calls.as_ref().unwrap()[0];
    assert_eq!((call.id.as_deref(), call.kind.as_str(), call.function.name.as_str()), (Some("call_1"), "function", "f"));
    assert_eq!(call.function.arguments, json!("{\"x\": 1}"));
    assert_eq!(messages[3].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(messages[3].name.as_deref(), Some("f"));
    assert_eq!(messages[4].reasoning_content.as_deref(), Some("hmm"));

    // Round trip through serde keeps the shape (absent fields stay absent).
    let back = serde_json::to_value(&messages[0]).unwrap();
    assert_eq!(back, json!({"role": "system", "content": "sys"}));

    let image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
    assert!(serde_json::from_value::<Vec<ChatMessage>>(image).is_err());

    // Templates see reasoning under both names transformers offers.
    let template = ChatTemplate::new("{{ messages[4].reasoning_content }}/{{ messages[4].thinking }}", None, None).unwrap();
    assert_eq!(template.render(&messages, &RenderOptions::default()).unwrap(), "hmm/hmm");
}
