//! The command line: parses arguments, loads config, hands over to the library.

pub mod demo;
pub mod export;
pub mod quickstart;
pub mod replay;
pub mod report;
pub mod run;
pub mod show;
pub mod status;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{self, exit, fatal};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::domain::{ClipId, Period, Region};
use crate::poll::{PollOutcome, SkipReason};
use crate::poll::{Worker, WorkerOptions};

#[derive(Debug, Parser)]
#[command(
    name = "soundtrend",
    version,
    about = "Keeps a historical, SQL-queryable record of how TikTok sounds trend"
)]
pub struct Cli {
    /// Config file; a missing ./config.toml means all defaults.
    #[arg(
        long,
        global = true,
        env = "SOUNDTREND_CONFIG",
        default_value = "config.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Poll once: one sound (--clip-id, --region) or every due watchlist entry (--due).
    Poll(PollArgs),
    /// The long-lived worker: polls due entries on schedule until SIGTERM/SIGINT.
    Run,
    /// End-to-end demo: the sample clip from a local demo API into a database of its own
    /// (`<database>_demo`), or from the real provider into the configured database when
    /// credentials are set. `--reset` drops the demo database.
    Quickstart(crate::cli::quickstart::QuickstartArgs),
    /// Entries, providers, credits, disabled entries and recent errors.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One sound on the terminal from the database: title, trend sparkline per region, top
    /// countries and interests, newest fetch. Calls no API.
    Show(crate::cli::show::ShowArgs),
    /// One self-contained HTML file: what is rising, credits per day, polling health, and every
    /// sound's trend per region, rank history, audience and provenance. Calls no API.
    Report(crate::cli::report::ReportArgs),
    /// A sound's stitched daily series as CSV or JSON lines. Calls no API.
    Export(crate::cli::export::ExportArgs),
    /// Manage the watchlist (SQL works just as well).
    #[command(subcommand)]
    Watch(crate::cli::watch::WatchCommand),
    /// Rebuild the derived tables from the raw bodies in `fetches`; calls no API.
    Replay(ReplayArgs),
    /// Serve the local demo API (both dialects, any clip) until Ctrl-C: point
    /// `provider.base_url` at it to try `soundtrend run` without credits.
    DemoServer {
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Only fetches requested at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub clip_id: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Also re-try bodies stored as `invalid_payload` (after a validation rule changed); those
    /// that pass today's rules become ok.
    #[arg(long)]
    pub retry_invalid: bool,
    /// Fetches per transaction (read, normalized and written as one bulk load).
    #[arg(long, default_value_t = 5000)]
    pub batch: i64,
}

#[derive(Debug, Args)]
pub struct PollArgs {
    #[arg(long, requires = "region", conflicts_with = "due")]
    pub clip_id: Option<String>,
    #[arg(long, requires = "clip_id")]
    pub region: Option<String>,
    /// 7, 30 or 120; default: the entry's period, else chosen automatically.
    #[arg(long)]
    pub period: Option<String>,
    /// Poll every due watchlist entry once, within the rate limit, then exit.
    #[arg(long, required_unless_present = "clip_id")]
    pub due: bool,
}

/// Runs the parsed command. The caller maps errors to exit codes.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let explicit = cli.config.as_path() != std::path::Path::new("config.toml");
    let settings =
        Settings::load(&cli.config, explicit).map_err(|e| fatal(exit::CONFIG, e.to_string()))?;
    crate::telemetry::init(&settings.log);
    match cli.command {
        Command::Migrate => {
            app::database(&settings.database).await?;
            println!("migrations applied to {}", settings.database.redacted_url());
            Ok(())
        }
        Command::Poll(args) => poll(&settings, args).await,
        Command::Run => crate::cli::run::run(settings).await,
        Command::Quickstart(args) => crate::cli::quickstart::run(&settings, args).await,
        Command::Status { json } => {
            let pool = app::database(&settings.database).await?;
            let status = crate::cli::status::collect(&pool, &settings, &SystemClock).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", crate::cli::status::render(&status));
            }
            Ok(())
        }
        Command::Show(args) => crate::cli::show::run(&settings, args).await,
        Command::Export(args) => crate::cli::export::run(&settings, args).await,
        Command::Report(args) => crate::cli::report::run(&settings, args).await,
        Command::Watch(cmd) => {
            let pool = app::database(&settings.database).await?;
            crate::cli::watch::run(&pool, cmd).await
        }
        Command::Replay(args) => replay(&settings, args).await,
        Command::DemoServer { listen } => {
            let (addr, server) = crate::cli::demo::serve(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("demo API on http://{addr}/ (KeyAPI and EchoTik dialects; any key is accepted); Ctrl-C stops it");
            let cancel = CancellationToken::new();
            app::spawn_signal_handler(cancel.clone());
            cancel.cancelled().await;
            server.abort();
            Ok(())
        }
    }
}

async fn poll(settings: &Settings, args: PollArgs) -> anyhow::Result<()> {
    let period = args
        .period
        .as_deref()
        .map(str::parse::<Period>)
        .transpose()
        .map_err(|e| fatal(exit::CONFIG, e.to_string()))?;
    let lanes = app::lanes(settings)?;
    let opts = WorkerOptions::from_settings(settings);
    let pool = app::database(&settings.database).await?;
    let poller = app::poller(pool.clone(), lanes, Arc::new(SystemClock)).await?;
    let kind = poller.provider();
    let kinds: Vec<&str> = poller.providers().iter().map(|p| p.as_str()).collect();
    let kinds = kinds.join(", ");
    let cancel = CancellationToken::new();
    app::spawn_signal_handler(cancel.clone());

    if args.due {
        let worker = Worker::new(poller, opts);
        let summary = worker.drain(&cancel).await?;
        println!(
            "polled due entries via {kinds}: {} stored ({} {}), {} failed, {} skipped",
            summary.stored,
            summary.rows,
            crate::cli::show::plural(summary.rows, "row", "rows"),
            summary.failed,
            summary.skipped
        );
        if summary.auth_rejected {
            return Err(fatal(
                exit::CREDENTIALS,
                format!(
                    "{kind} rejected the credentials; check {}",
                    kind.credential_env_vars().join(", ")
                ),
            ));
        }
        if summary.budget_exhausted {
            return Err(fatal(exit::BUDGET, "the daily credit budget is spent; the remaining entries are polled after the next UTC midnight"));
        }
        if summary.provider_down {
            return Err(fatal(exit::POLL_FAILED, format!("no provider could take some entries ({kinds}: down or out); they are polled when one is usable again, see `soundtrend status`")));
        }
        if summary.provider_paused {
            return Err(fatal(exit::POLL_FAILED, format!("{kind} asked every instance to wait (429 Retry-After); the remaining entries are polled after the pause")));
        }
        if summary.failed > 0 {
            return Err(fatal(
                exit::POLL_FAILED,
                format!(
                    "{} poll(s) failed; see fetches.outcome and watchlist.last_error",
                    summary.failed
                ),
            ));
        }
        return Ok(());
    }

    let clip_id = ClipId::parse(args.clip_id.as_deref().unwrap_or_default())
        .map_err(|e| fatal(exit::CONFIG, e.to_string()))?;
    let region = Region::parse(args.region.as_deref().unwrap_or_default())
        .map_err(|e| fatal(exit::CONFIG, e.to_string()))?;
    let entry = app::claim_for_one_poll(&opts, &pool, "cli", &clip_id, &region).await?;
    poller.forgive_credentials().await?;
    let outcome = poller
        .poll(&entry, period, &cancel)
        .await
        .context("cannot record the poll")?;
    match outcome {
        PollOutcome::Stored { period, written, attempts, provider: kind } => {
            println!(
                "ok: {clip_id}/{region} period={period} via {kind}: fetch_id={} rows={} (trend points {}, countries {}, interests {}), attempts={attempts}",
                written.fetch_id, written.rows(), written.trend_points, written.countries, written.interests
            );
            Ok(())
        }
        PollOutcome::Failed { error, attempts, .. } => Err(fatal(
            exit::POLL_FAILED,
            format!("{clip_id}/{region} failed after {attempts} attempt(s) via {kinds}: {error} (outcome {})", error.outcome().as_str()),
        )),
        PollOutcome::Skipped(SkipReason::CredentialsRejected) => Err(fatal(exit::CREDENTIALS, format!("{kind} rejected the credentials; check {}", kind.credential_env_vars().join(", ")))),
        PollOutcome::Skipped(SkipReason::ProviderPaused { wait }) => Err(fatal(
            exit::POLL_FAILED,
            format!("{clip_id}/{region} was not polled: {kind} asked to wait {:.0} s (429 Retry-After); try again after that", wait.as_secs_f64()),
        )),
        PollOutcome::Skipped(SkipReason::BudgetExhausted { used, budget }) => Err(fatal(exit::BUDGET, format!("the daily credit budget is spent ({used} of {budget} credits)"))),
        PollOutcome::Skipped(reason) => Err(fatal(exit::RUNTIME, format!("{clip_id}/{region} was not polled: {reason:?}"))),
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn replay(settings: &Settings, args: ReplayArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(|e| fatal(exit::CONFIG, e))?;
    let clip_id = args.clip_id.as_deref().map(app::clip_arg).transpose()?;
    let region = app::region_arg(args.region.as_deref())?;
    if args.batch < 1 {
        return Err(fatal(exit::CONFIG, "--batch must be at least 1"));
    }
    let pool = app::database(&settings.database).await?;
    let filter = crate::cli::replay::ReplayFilter {
        since,
        clip_id: clip_id.map(|c| c.to_string()),
        region: region.map(|r| r.to_string()),
        retry_invalid: args.retry_invalid,
    };
    let started = std::time::Instant::now();
    let summary = crate::cli::replay::replay(&pool, &filter, args.batch, true).await?;
    println!(
        "replayed {} {} into {} {} ({} written or removed, the rest already right; {} unused audience-list {} deleted) and re-stitched {} {} ({} index {} changed) in {:.1}s (rows {:.1}s, index {:.1}s; {} skipped, {} now invalid, {} revived), no API called",
        summary.fetches,
        crate::cli::show::plural(summary.fetches, "fetch", "fetches"),
        summary.rows,
        crate::cli::show::plural(summary.rows, "row", "rows"),
        summary.changed,
        summary.orphan_list_rows,
        crate::cli::show::plural(summary.orphan_list_rows, "row", "rows"),
        summary.pairs,
        crate::cli::show::plural(summary.pairs, "pair", "pairs"),
        summary.index_rows,
        crate::cli::show::plural(summary.index_rows, "row", "rows"),
        started.elapsed().as_secs_f64(),
        summary.rows_pass.as_secs_f64(),
        summary.index_pass.as_secs_f64(),
        summary.skipped,
        summary.invalidated,
        summary.revived
    );
    Ok(())
}

fn parse_since(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("invalid --since {raw:?}: expected YYYY-MM-DD or an RFC 3339 time"))
}
