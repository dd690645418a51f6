//! Command-line front end. Every flag maps onto an engine option, so tests and benchmarks drive
//! the engine exactly the way a user does.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use engine::chat::{ChatMessage, ChatTemplate, RenderOptions};
use engine::device::{Device, RefDevice};
use engine::generate::{generate, GenerateOptions, Generation};
use engine::loader::{open_model, ModelFiles};
use engine::model::{LoadProgress, Model, ModelOptions};
use engine::sampling::SamplingParams;
use engine::session::{Session, DECODE_PIPELINE_DEPTH};
use engine::tokenizer::Tokenizer;
use engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Usage(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, CliError>;

#[derive(Parser)]
#[command(name = "qwglm", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("QWGLM_COMMIT"), ")"), about = "Private, local Qwen-family inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer one prompt (the model's chat template is applied unless --raw), streaming to stdout.
    Run(RunArgs),
    /// Multi-turn chat in the terminal; the conversation stays in the KV cache between turns.
    Chat(ChatArgs),
    /// Print a model file's metadata, tensors and quantization mix.
    Inspect(InspectArgs),
    /// Measure load time, prefill and decode speed.
    Bench(BenchArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    /// Plain-Rust reference kernels (the oracle; slow).
    Ref,
    /// The WGSL kernels on the GPU through wgpu (Vulkan).
    Wgpu,
    /// The same WGSL kernels on the GPU simulator (CPU; no GPU needed).
    Sim,
}

#[derive(Args)]
struct ModelArgs {
    /// A .gguf file, a Hugging Face directory (config.json + model.safetensors), or a cached model
    /// name: smollm2, qwen2.5-0.5b.
    #[arg(short, long)]
    model: String,
    #[arg(long, value_enum, default_value = "ref")]
    backend: Backend,
    /// KV cache length in tokens (default: the model's maximum, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Most prompt tokens per forward pass.
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Always take the most likely token (same as --temperature 0).
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    #[arg(long, default_value_t = 0.8)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    stop_strings: Vec<String>,
    /// Keep generating past end-of-turn tokens (parity runs).
    #[arg(long)]
    no_stop: bool,
    /// Qwen3 thinking mode (passed to the chat template as enable_thinking).
    #[arg(long)]
    think: Option<bool>,
}

impl SamplingArgs {
    fn options(&self, tokenizer: &Tokenizer) -> GenerateOptions {
        let sampling = SamplingParams {
            temperature: if self.greedy { 0.0 } else { self.temperature },
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            ..SamplingParams::default()
        };
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampling,
            stop_tokens: tokenizer.eos_ids().to_vec(),
            stop_strings: self.stop_strings.clone(),
            ignore_stop_tokens: self.no_stop,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The user's message (or the raw text with --raw).
    #[arg(short, long)]
    prompt: Option<String>,
    /// System message placed before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// An OpenAI-style conversation (JSON array of {role, content}) rendered with the model's template.
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Feed the prompt to the model as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object (prompt ids, generated ids, text, stop reason, timings) instead of streaming.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[arg(long)]
    system: Option<String>,
}

#[derive(Args)]
struct InspectArgs {
    /// A .gguf file or a Hugging Face directory.
    model: String,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// A .gguf file, a Hugging Face directory or a cached model name (or use --synthetic).
    #[arg(short, long, required_unless_present = "synthetic", conflicts_with = "synthetic")]
    model: Option<String>,
    /// Random weights with the shapes and formats of a named config instead of a file:
    /// qwen2.5-0.5b, qwen3-0.6b, llama3-8b-q4_k_m, smollm2-135m.
    #[arg(long)]
    synthetic: Option<String>,
    #[arg(long, value_enum, default_value = "ref")]
    backend: Backend,
    /// KV cache length in tokens (default: prompt + generated tokens).
    #[arg(long)]
    ctx: Option<usize>,
    /// Most prompt tokens per forward pass.
    #[arg(long, default_value_t = 512)]
    chunk: usize,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens to decode.
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Measured runs after one warm-up run (pipelines compiled, buffers touched); medians reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// A measured read bandwidth in GB/s (e.g. the WGSL streaming read of docs/PERF.md): decode
    /// is also reported as a percentage of it.
    #[arg(long)]
    roofline_gbs: Option<f64>,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Chat(args) => chat(args),
        Command::Inspect(args) => inspect(args),
        Command::Bench(args) => bench(args),
    }
}

/// Where `scripts/fetch-models.sh` puts the real models.
fn models_dir() -> PathBuf {
    std::env::var_os("QWGLM_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/qwglm/models")
    })
}

fn resolve_model(name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let file = match name {
        "smollm2" | "smollm2-135m" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "qwen2.5-0.5b" | "qwen2.5-coder-0.5b" => "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-1.5b" | "qwen2.5-coder-1.5b" => "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        _ => return Err(CliError::Usage(format!("no such model file or known name: {name}"))),
    };
    let cached = models_dir().join(file);
    if cached.exists() {
        Ok(cached)
    } else {
        Err(CliError::Usage(format!("{} is not downloaded yet: run scripts/fetch-models.sh", cached.display())))
    }
}

struct Loaded {
    session: Session,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    load_ms: f64,
}

fn progress_bar(quiet: bool) -> impl FnMut(LoadProgress) {
    let mut last_percent = u64::MAX;
    move |p: LoadProgress| {
        if quiet || p.bytes_total == 0 {
            return;
        }
        let percent = p.bytes_done * 100 / p.bytes_total;
        if percent == last_percent && p.tensors_done != p.tensors_total {
            return;
        }
        last_percent = percent;
        let filled = (percent / 4) as usize;
        eprint!("\rloading [{}{}] {percent:>3}% {}/{} tensors", "#".repeat(filled), " ".repeat(25 - filled.min(25)), p.tensors_done, p.tensors_total);
        if p.tensors_done == p.tensors_total {
            eprintln!();
        }
    }
}

fn load(args: &ModelArgs) -> Result<Loaded> {
    let t0 = engine::clock::now_ms();
    let path = resolve_model(&args.model)?;
    let ModelFiles { source, config, tokenizer, template, .. } = open_model(&path)?;
    let tokenizer = tokenizer.ok_or_else(|| CliError::Usage(format!("{} has no tokenizer", path.display())))?;
    let mut device = new_device(args.backend)?;
    let opts = ModelOptions {
        context: args.ctx.unwrap_or(config.max_context.min(4096)),
        chunk: args.chunk,
        all_logits: false,
    };
    let mut progress = progress_bar(args.quiet);
    let model = Model::load(device.as_mut(), source.as_ref(), config, opts, &mut progress)?;
    Ok(Loaded { session: Session::new(device, model), tokenizer, template, load_ms: engine::clock::now_ms() - t0 })
}

fn new_device(backend: Backend) -> Result<Box<dyn Device>> {
    Ok(match backend {
        Backend::Ref => Box::new(RefDevice::new()),
        Backend::Wgpu => Box::new(pollster::block_on(engine::device::WgpuDevice::new(Default::default()))?),
        Backend::Sim => Box::new(qwglm_sim::SimDevice::new(Default::default())?),
    })
}

fn render(template: Option<&ChatTemplate>, messages: &[ChatMessage], think: Option<bool>) -> Result<String> {
    let template = template.ok_or_else(|| CliError::Usage("this model has no chat template; use --raw".into()))?;
    let opts = RenderOptions { add_generation_prompt: true, enable_thinking: think, ..RenderOptions::default() };
    Ok(template.render(messages, &opts)?)
}

fn run(args: RunArgs) -> Result<()> {
    let mut loaded = load(&args.model)?;
    let prompt_text = if args.raw {
        args.prompt.clone().ok_or_else(|| CliError::Usage("--raw needs --prompt".into()))?
    } else {
        let mut messages = Vec::new();
        if let Some(file) = &args.messages {
            let json = std::fs::read(file)?;
            messages = serde_json::from_slice::<Vec<ChatMessage>>(&json)
                .map_err(|e| CliError::Usage(format!("{}: not a list of chat messages: {e}", file.display())))?;
        }
        if let Some(system) = &args.system {
            messages.insert(0, ChatMessage::new("system", system));
        }
        if let Some(prompt) = &args.prompt {
            messages.push(ChatMessage::new("user", prompt));
        }
        if messages.is_empty() {
            return Err(CliError::Usage("give --prompt or --messages".into()));
        }
        render(loaded.template.as_ref(), &messages, args.sampling.think)?
    };
    // The template already contains any BOS the model wants; raw prompts get the tokenizer's default.
    let prompt_ids = loaded.tokenizer.encode(&prompt_text, args.raw)?;
    let opts = args.sampling.options(&loaded.tokenizer);
    let stream = !args.json;
    let mut stdout = std::io::stdout();
    let result = pollster::block_on(generate(&mut loaded.session, &loaded.tokenizer, &prompt_ids, &opts, None, &mut |ev| {
        if stream {
            let _ = stdout.write_all(ev.text.as_bytes());
            let _ = stdout.flush();
        }
    }))?;
    if args.json {
        print_json(&result, loaded.load_ms)?;
    } else {
        println!();
        if !args.model.quiet {
            eprintln!("{}", summary(&result));
        }
    }
    Ok(())
}

fn summary(g: &Generation) -> String {
    let t = &g.timings;
    format!(
        "[{} prompt tokens ({} reused), {} generated, stop: {:?}; prefill {:.1} tok/s, decode {:.1} tok/s]",
        t.prompt_tokens,
        t.reused_tokens,
        t.generated_tokens,
        g.stop_reason,
        t.prefill_tok_per_s(),
        t.decode_tok_per_s()
    )
}

fn print_json(g: &Generation, load_ms: f64) -> Result<()> {
    let mut value = serde_json::to_value(g).map_err(|e| CliError::Usage(e.to_string()))?;
    value["timings"]["load_ms"] = serde_json::json!(load_ms);
    println!("{value}");
    Ok(())
}

fn chat(args: ChatArgs) -> Result<()> {
    let mut loaded = load(&args.model)?;
    let opts = args.sampling.options(&loaded.tokenizer);
    let mut history: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("chat with {} — empty line or Ctrl-D to quit", args.model.model);
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        history.push(ChatMessage::new("user", line.trim_end()));
        // Context policy: drop the oldest non-system turns until prompt + answer budget fits.
        let prompt_ids = loop {
            let text = render(loaded.template.as_ref(), &history, args.sampling.think)?;
            let ids = loaded.tokenizer.encode(&text, false)?;
            let budget = loaded.session.context().saturating_sub(opts.max_tokens.min(loaded.session.context() / 2));
            let first_turn = history.iter().position(|m| m.role != "system").unwrap_or(0);
            if ids.len() <= budget || history.len() - first_turn <= 1 {
                break ids;
            }
            history.remove(first_turn);
        };
        let result = pollster::block_on(generate(&mut loaded.session, &loaded.tokenizer, &prompt_ids, &opts, None, &mut |ev| {
            let _ = stdout.write_all(ev.text.as_bytes());
            let _ = stdout.flush();
        }));
        match result {
            Ok(g) => {
                println!();
                if !args.model.quiet {
                    eprintln!("{}", summary(&g));
                }
                history.push(ChatMessage::new("assistant", &g.text));
            }
            Err(e) => {
                eprintln!("\nerror: {e}");
                history.pop();
            }
        }
    }
    Ok(())
}

fn inspect(args: InspectArgs) -> Result<()> {
    let path = resolve_model(&args.model)?;
    let report = engine::inspect::inspect_path(&path)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| CliError::Usage(e.to_string()))?);
    } else {
        print!("{}", report.to_text(args.tensors));
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    let t0 = engine::clock::now_ms();
    let needed = args.prompt_tokens + args.gen_tokens + DECODE_PIPELINE_DEPTH;
    let (label, mut session) = if let Some(shape) = &args.synthetic {
        let (config, source) = crate::synthetic::synthetic(shape).map_err(CliError::Usage)?;
        let mut device = new_device(args.backend)?;
        let opts = ModelOptions { context: args.ctx.unwrap_or(needed), chunk: args.chunk, all_logits: false };
        let model = Model::load(device.as_mut(), &source, config, opts, &mut progress_bar(args.quiet))?;
        (format!("synthetic {shape}"), Session::new(device, model))
    } else {
        let model = args.model.clone().unwrap_or_default();
        let ctx = Some(args.ctx.unwrap_or(needed));
        let model_args = ModelArgs { model: model.clone(), backend: args.backend, ctx, chunk: args.chunk, quiet: args.quiet };
        (model, load(&model_args)?.session)
    };
    let load_ms = engine::clock::now_ms() - t0;
    let vocab = session.model().config().vocab_size as u32;
    // A fixed pseudo-random prompt: the speed of a forward pass does not depend on the token values.
    let prompt: Vec<u32> = (0..args.prompt_tokens as u32).map(|i| (i.wrapping_mul(2654435761) >> 7) % vocab).collect();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for run in 0..=args.repeat {
        // Without a reset the second run would reuse the cached prompt instead of prefilling it.
        session.reset();
        // Greedy decoding as `generate` runs it: argmax on the device, passes pipelined.
        let start = engine::clock::now_ms();
        let (mut token, _, _) = pollster::block_on(session.prefill_argmax(&prompt))?;
        let prefilled = engine::clock::now_ms();
        for _ in 0..args.gen_tokens {
            token = pollster::block_on(session.append_argmax_pipelined(token, DECODE_PIPELINE_DEPTH))?;
        }
        let done = engine::clock::now_ms();
        if run > 0 || args.repeat == 0 {
            prefill.push(args.prompt_tokens as f64 * 1000.0 / (prefilled - start));
            decode.push(args.gen_tokens as f64 * 1000.0 / (done - prefilled));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (prefill_tps, decode_tps) = (median(&mut prefill), median(&mut decode));
    let weight_bytes = session.model().decode_weight_bytes();
    let decode_gbs = weight_bytes as f64 * decode_tps / 1e9;
    let roofline_pct = args.roofline_gbs.map(|r| 100.0 * decode_gbs / r);
    let info = session.device().info();
    if args.json {
        let report = serde_json::json!({
            "model": label, "device": info.name, "backend": info.backend,
            "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens, "runs": prefill.len(),
            "load_ms": load_ms, "prefill_tok_s": prefill_tps, "decode_tok_s": decode_tps,
            "decode_ms_per_token": 1000.0 / decode_tps, "decode_weight_bytes": weight_bytes,
            "decode_gb_s": decode_gbs, "decode_roofline_pct": roofline_pct,
        });
        println!("{report}");
        return Ok(());
    }
    println!("model:    {label}");
    println!("device:   {} ({})", info.name, info.backend);
    println!("load:     {load_ms:.0} ms");
    println!("prefill:  {prefill_tps:.2} tok/s (pp{}, median of {})", args.prompt_tokens, prefill.len());
    println!("decode:   {decode_tps:.2} tok/s (tg{}, {:.3} ms/token)", args.gen_tokens, 1000.0 / decode_tps);
    print!("weights:  {:.3} GB read per decode step, {decode_gbs:.0} GB/s effective", weight_bytes as f64 / 1e9);
    match roofline_pct {
        Some(pct) => println!(" ({pct:.1}% of {:.0} GB/s)", args.roofline_gbs.unwrap_or_default()),
        None => println!(),
    }
    Ok(())
}
