//! `qwglm`: the native command line of the QWGLM engine (run, chat, inspect, bench).

mod cli;
mod synthetic;

fn main() {
    if let Err(err) = cli::main() {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
