//! A small markdown subset for answers: fenced code blocks, paragraphs, and inline `code`,
//! **bold** and *italic*. Parsed into plain data; the popup renders it as Yew text nodes, so no
//! HTML in a model's answer is ever interpreted.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inline {
    Text(String),
    Code(String),
    Bold(String),
    Italic(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A fenced block with its info string (language), possibly still open while streaming.
    Code { lang: String, text: String },
    Paragraph(Vec<Inline>),
}

pub fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut para: Vec<&str> = Vec::new();
    let mut code: Option<(String, Vec<&str>)> = None;
    let flush = |para: &mut Vec<&str>, blocks: &mut Vec<Block>| {
        if !para.is_empty() {
            blocks.push(Block::Paragraph(inline(&para.join("\n"))));
            para.clear();
        }
    };
    for line in text.split('\n') {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut code, fence) {
            (Some(_), Some(_)) => {
                let (lang, lines) = code.take().unwrap_or_default();
                blocks.push(Block::Code { lang, text: lines.join("\n") });
            }
            (Some((_, lines)), None) => lines.push(line),
            (None, Some(info)) => {
                flush(&mut para, &mut blocks);
                code = Some((info.trim().to_string(), Vec::new()));
            }
            (None, None) if line.trim().is_empty() => flush(&mut para, &mut blocks),
            (None, None) => para.push(line),
        }
    }
    flush(&mut para, &mut blocks);
    if let Some((lang, lines)) = code {
        blocks.push(Block::Code { lang, text: lines.join("\n") });
    }
    blocks
}

/// Inline spans: `code` first (its content is literal), then **bold** and *italic*.
pub fn inline(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut plain = String::new();
    while !rest.is_empty() {
        let marker = [("`", 0u8), ("**", 1), ("*", 2)].into_iter().find(|(m, _)| rest.starts_with(m));
        if let Some((m, kind)) = marker {
            if let Some(end) = rest[m.len()..].find(m).filter(|&e| e > 0) {
                let inner = rest[m.len()..m.len() + end].to_string();
                if !plain.is_empty() {
                    out.push(Inline::Text(std::mem::take(&mut plain)));
                }
                out.push(match kind {
                    0 => Inline::Code(inner),
                    1 => Inline::Bold(inner),
                    _ => Inline::Italic(inner),
                });
                rest = &rest[m.len() * 2 + end..];
                continue;
            }
        }
        let ch = rest.chars().next().unwrap_or_default();
        plain.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    if !plain.is_empty() {
        out.push(Inline::Text(plain));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_paragraphs_and_inline_spans() {
        let md = "Use `ls`:\n\n```sh\nls -la <dir>\n```\n**Done** and *ok* <b>x</b>";
        assert_eq!(
            parse(md),
            vec![
                Block::Paragraph(vec![Inline::Text("Use ".into()), Inline::Code("ls".into()), Inline::Text(":".into())]),
                Block::Code { lang: "sh".into(), text: "ls -la <dir>".into() },
                Block::Paragraph(vec![
                    Inline::Bold("Done".into()),
                    Inline::Text(" and ".into()),
                    Inline::Italic("ok".into()),
                    Inline::Text(" <b>x</b>".into()),
                ]),
            ]
        );
    }

    #[test]
    fn an_open_fence_while_streaming_is_a_code_block() {
        assert_eq!(parse("```py\nprint(1)"), vec![Block::Code { lang: "py".into(), text: "print(1)".into() }]);
        assert_eq!(inline("a * b"), vec![Inline::Text("a * b".into())]);
    }
}
