//! soundtrend's benchmarks: ingest throughput against Postgres' own COPY rate, watchlist scale,
//! rate-limit precision, the analysts' views. Each prints a Markdown report; `docs/benchmarks.md` keeps the latest.
//!
//!   cargo build --release --bins && target/release/bench all
//!   target/release/bench --smoke          # tiny sizes, as CI runs it (no timing assertions)

mod common;
mod ingest;
mod ratelimit;
mod replay;
mod scale;
mod views;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "soundtrend benchmarks (DATABASE_URL names the Postgres server to use)"
)]
struct Args {
    /// Tiny sizes and short runs, for CI: proves the benchmarks work, measures nothing.
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    what: Option<What>,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Responses/s and rows/s of the real poll path, and its ratio to COPY.
    Ingest {
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
        /// Polls in flight (split over a `KeyAPI` and an `EchoTik` worker).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Trend window of every entry: 7, 30, 120, or 0 for a mix of all three.
        #[arg(long, default_value_t = 7)]
        period: i16,
        /// `poll.commit_group` values to measure, each in its own run (1: every answer alone).
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        commit_group: Vec<usize>,
    },
    /// Claim and bookkeeping latency with a large watchlist, the claim plan, daemon RSS.
    Scale {
        #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
        sizes: Vec<usize>,
    },
    /// Requests per sliding second against the quota, one and several instances, and 429s.
    Ratelimit {
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 2)]
        burst: u32,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        instances: Vec<usize>,
    },
    /// One sound's `sound_daily` and the whole `sound_rising` on a year of history, and the
    /// storage of `trend_observations` per pair per year.
    Views {
        #[arg(long, default_value_t = 10_000)]
        pairs: i32,
        #[arg(long, default_value_t = 365)]
        days: i32,
    },
    /// `soundtrend replay` over an archive of N fetches, against COPY of the rows it writes.
    Replay {
        #[arg(long, value_delimiter = ',', default_value = "100000")]
        fetches: Vec<usize>,
        /// Daily 7-day windows archived per (clip, region) pair.
        #[arg(long, default_value_t = 10)]
        per_pair: usize,
        /// Fetches per transaction (`soundtrend replay --batch`).
        #[arg(long, default_value_t = 5000)]
        batch: i64,
    },
    /// Everything, at the default sizes.
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // RUST_LOG=soundtrend=info shows what the code under test logs (e.g. replay's list cleanup).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let what = args.what.unwrap_or(What::All);
    let smoke = args.smoke;
    println!(
        "# soundtrend benchmarks{}\n",
        if smoke {
            " (smoke: tiny sizes, figures mean nothing)"
        } else {
            ""
        }
    );
    println!("{}\n", machine());
    let ingest_args = |sizes: Vec<usize>, concurrency, period, commit_groups| ingest::IngestArgs {
        sizes: if smoke { vec![200] } else { sizes },
        concurrency,
        period,
        commit_groups,
    };
    let scale_args = |sizes: Vec<usize>| scale::ScaleArgs {
        sizes: if smoke { vec![1000] } else { sizes },
        daemon_seconds: if smoke { 2 } else { 10 },
    };
    let rl_args = |rate, burst, seconds, instances: Vec<usize>| ratelimit::RateLimitArgs {
        rate,
        burst,
        seconds: if smoke { 4 } else { seconds },
        instances: if smoke { vec![1, 2] } else { instances },
    };
    let views_args = |pairs, days| views::ViewsArgs {
        pairs: if smoke { 50 } else { pairs },
        days: if smoke { 30 } else { days },
        storage_pairs: if smoke { 5 } else { 100 },
    };
    let replay_args = |fetches: Vec<usize>, fetches_per_pair, batch| replay::ReplayArgs {
        fetches: if smoke { vec![200] } else { fetches },
        fetches_per_pair,
        batch: if smoke { 50 } else { batch },
    };
    match what {
        What::Replay {
            fetches,
            per_pair,
            batch,
        } => println!(
            "{}",
            replay::run(&replay_args(fetches, per_pair, batch)).await?
        ),
        What::Views { pairs, days } => println!("{}", views::run(&views_args(pairs, days)).await?),
        What::Ingest {
            sizes,
            concurrency,
            period,
            commit_group,
        } => println!(
            "{}",
            ingest::run(&ingest_args(sizes, concurrency, period, commit_group)).await?
        ),
        What::Scale { sizes } => println!("{}", scale::run(&scale_args(sizes)).await?),
        What::Ratelimit {
            rate,
            burst,
            seconds,
            instances,
        } => {
            println!(
                "{}",
                ratelimit::run(&rl_args(rate, burst, seconds, instances)).await?
            );
        }
        What::All => {
            println!(
                "{}",
                ingest::run(&ingest_args(vec![1000, 10_000, 100_000], 8, 7, vec![1, 64])).await?
            );
            println!(
                "{}",
                scale::run(&scale_args(vec![1000, 100_000, 1_000_000])).await?
            );
            println!(
                "{}",
                ratelimit::run(&rl_args(20.0, 2, 60, vec![1, 3])).await?
            );
            println!("{}", views::run(&views_args(10_000, 365)).await?);
            println!(
                "{}",
                replay::run(&replay_args(vec![100_000], 10, 5000)).await?
            );
        }
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    format!(
        "Machine: {cores} cores ({cpu}), {mem} RAM; {profile}; database {}",
        soundtrend::config::redact_url(&common::server_url())
    )
}
