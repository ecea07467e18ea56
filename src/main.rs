use std::process::ExitCode;

use clap::Parser;
use soundtrend::app::{exit, Fatal};
use soundtrend::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match Box::pin(cli::run(cli)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<Fatal>().map_or(exit::RUNTIME, |f| f.code);
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line, without the repeats that wrapped errors often carry.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
