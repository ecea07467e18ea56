//! `soundtrend quickstart`: the whole job once, end to end, on any machine. With the provider's
//! credentials in the environment it polls the real API; without them it starts a local demo API
//! that answers in both providers' dialects, so nothing is needed but Postgres.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::cli::demo;
use crate::clock::SystemClock;
use crate::config::{DatabaseSettings, ProviderSettings, Settings};
use crate::domain::{ClipId, Region};
use crate::poll::{PollOptions, PollOutcome, Poller, WorkerOptions};
use crate::provider::{Credentials, ProviderKind};
use crate::store::watchlist;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// The sound to watch (default: the providers' documented sample clip).
    #[arg(long, default_value = demo::SAMPLE_CLIP_ID)]
    pub clip_id: String,
    /// Its region (ISO 3166 alpha-2).
    #[arg(long, default_value = "US")]
    pub region: String,
    /// Drop the demo database (the configured name plus `_demo`) with all its made-up data, then
    /// exit. The configured database is never touched.
    #[arg(long, conflicts_with_all = ["clip_id", "region"])]
    pub reset: bool,
}

/// The demo's own database: the configured database's name plus `_demo` (`soundtrend` becomes
/// `soundtrend_demo`) on the same server, so made-up data never sits beside real data and a
/// later `soundtrend run` never polls the demo's entries for real.
pub fn demo_database(db: &DatabaseSettings) -> anyhow::Result<DatabaseSettings> {
    let mut url = url::Url::parse(db.url.expose_secret()).map_err(|_| {
        app::fatal(
            app::exit::CONFIG,
            "config key `database.url` is not a valid Postgres URL",
        )
    })?;
    let name = match url.path().trim_start_matches('/') {
        "" => "soundtrend",
        name => name,
    };
    let demo = if name.ends_with("_demo") {
        name.to_owned()
    } else {
        format!("{name}_demo")
    };
    url.set_path(&format!("/{demo}"));
    Ok(DatabaseSettings {
        url: SecretString::from(url.to_string()),
        ..db.clone()
    })
}

pub async fn run(settings: &Settings, args: QuickstartArgs) -> anyhow::Result<()> {
    if args.reset {
        return reset(settings).await;
    }
    let clip_id =
        ClipId::parse(&args.clip_id).map_err(|e| app::fatal(app::exit::CONFIG, e.to_string()))?;
    let region =
        Region::parse(&args.region).map_err(|e| app::fatal(app::exit::CONFIG, e.to_string()))?;
    let first = settings
        .provider_lanes()
        .into_iter()
        .next()
        .expect("config validation requires a provider");
    let kind = first.name;
    let live = Credentials::from_env(kind).map_err(|m| app::fatal(app::exit::CREDENTIALS, m))?;

    println!("soundtrend quickstart");
    let mut settings = settings.clone();
    if live.is_some() {
        println!(
            "  database: {} (the configured database, from DATABASE_URL or database.url: real data)",
            settings.database.redacted_url()
        );
    } else {
        let configured = settings.database.redacted_url();
        settings.database = demo_database(&settings.database)?;
        let demo = settings.database.redacted_url();
        let apart = if demo == configured {
            "the configured database is itself a demo database".to_owned()
        } else {
            format!("the configured {configured} is not touched")
        };
        println!(
            "  database: {demo} (the demo's own database; {apart}; `soundtrend quickstart --reset` drops it)"
        );
    }
    let settings = &settings;
    let worker = WorkerOptions::from_settings(settings);
    let pool = app::database(&settings.database).await?;
    println!("  migrations: applied");

    // (provider, base URL, credentials, credits per request, region) for each poll to make.
    let mut plans = Vec::new();
    let demo_mode = live.is_none();
    if let Some(credentials) = live {
        println!(
            "  mode: LIVE: polling {kind} at {} with the credentials in {} ({} credits per request)",
            first.endpoint(),
            kind.credential_env_vars().join(", "),
            first.credits()
        );
        plans.push((kind, first.endpoint(), credentials, None, region.clone()));
    } else {
        let (addr, _server) = demo::serve("127.0.0.1:0".parse().expect("address"))
            .await
            .context("cannot start the demo API")?;
        let base: url::Url = format!("http://{addr}/").parse().expect("demo URL");
        println!(
            "  mode: DEMO: {} not set, so polling a local demo API at {base} that replays the providers' documented sample response in both dialects (no credits spent)",
            kind.credential_env_vars().join(" / ")
        );
        let other =
            Region::parse(if region.as_str() == "GB" { "US" } else { "GB" }).expect("valid");
        plans.push((
            ProviderKind::KeyApi,
            base.clone(),
            Credentials::Bearer(SecretString::from("demo-key".to_owned())),
            Some(0),
            region.clone(),
        ));
        plans.push((
            ProviderKind::EchoTik,
            base,
            Credentials::Basic {
                username: "demo".into(),
                password: SecretString::from("demo".to_owned()),
            },
            Some(0),
            other,
        ));
    }

    let mut failures = 0;
    for (kind, base, credentials, cost, region) in plans {
        let inserted =
            watchlist::upsert(&pool, clip_id.as_str(), region.as_str(), None, None).await?;
        println!(
            "  watchlist: {clip_id}/{region} {}",
            if inserted { "added" } else { "already watched" }
        );
        // The provider's own settings when it is configured, else the first one's under its name.
        let p = settings
            .provider_lanes()
            .into_iter()
            .find(|p| p.name == kind)
            .unwrap_or_else(|| ProviderSettings {
                name: kind,
                ..first.clone()
            });
        let client = app::client(&p, base, credentials)?;
        crate::store::quota::ensure_provider(&pool, kind).await?;
        let mut quota = app::quota_params(&p);
        if let Some(c) = cost {
            quota.credits_per_request = c;
            quota.daily_budget = None;
        }
        let poller = Arc::new(Poller::new(
            pool.clone(),
            client,
            quota,
            PollOptions::for_provider(settings, &p),
            Arc::new(SystemClock),
        ));
        let entry =
            app::claim_for_one_poll(&worker, &pool, "quickstart", &clip_id, &region).await?;
        poller.forgive_credentials().await?;
        match poller.poll(&entry, None, &CancellationToken::new()).await? {
            PollOutcome::Stored { period, written, .. } => println!(
                "  poll: {clip_id}/{region} via {kind} ({} dialect), period {period} days: stored fetch {} with {} {}",
                kind,
                written.fetch_id,
                written.rows(),
                crate::cli::show::plural(written.rows(), "row", "rows")
            ),
            PollOutcome::Failed { error, .. } => {
                failures += 1;
                println!("  poll: {clip_id}/{region} via {kind} FAILED: {error}");
            }
            PollOutcome::Skipped(reason) => {
                failures += 1;
                println!("  poll: {clip_id}/{region} via {kind} skipped: {reason:?}");
            }
        }
    }

    landed(&pool, &clip_id).await?;
    let show = format!("soundtrend show {clip_id}");
    if demo_mode {
        println!("\n(`{show}` prints the above from the database alone; for the demo's data run it with DATABASE_URL={})", settings.database.redacted_url());
    } else {
        println!("\n(`{show}` prints the above any time, from the database alone)");
    }
    if failures > 0 {
        return Err(app::fatal(
            app::exit::POLL_FAILED,
            format!("{failures} poll(s) did not store data; see above"),
        ));
    }
    if demo_mode {
        println!("\nThis was made-up data in {}. Next: set your provider's credentials and run `soundtrend quickstart` again (LIVE), or put your own sounds in the watchlist of the configured database and run `soundtrend run` (see README.md).", settings.database.redacted_url());
    } else {
        println!("\nNext: put your own sounds in the watchlist with SQL and run `soundtrend run` (see README.md).");
    }
    Ok(())
}

/// `quickstart --reset`: drops the demo database; the configured one is never touched.
async fn reset(settings: &Settings) -> anyhow::Result<()> {
    let demo = demo_database(&settings.database)?;
    let url = demo.redacted_url();
    if app::drop_database(&demo).await? {
        println!("dropped the demo database {url} and its made-up data; `soundtrend quickstart` creates it afresh");
    } else {
        println!("no demo database to drop ({url} does not exist)");
    }
    Ok(())
}

/// Prints what landed, the way an analyst would look at it.
async fn landed(pool: &PgPool, clip_id: &ClipId) -> anyhow::Result<()> {
    println!("\nWhat landed for clip {clip_id}:");
    let counts = crate::store::report::rows_per_table(pool, clip_id.as_str()).await?;
    for (table, n) in counts {
        println!(
            "  {table:<20} {n:>6} {}",
            crate::cli::show::plural(n, "row", "rows")
        );
    }
    println!();
    if let Some(text) = crate::cli::show::render(pool, clip_id, None, 30).await? {
        print!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::demo_database;
    use crate::config::Settings;

    fn demo_of(url: &str) -> String {
        let mut db = Settings::default().database;
        db.url = SecretString::from(url.to_owned());
        demo_database(&db).unwrap().url.expose_secret().to_owned()
    }

    #[test]
    fn the_demo_database_is_the_configured_name_plus_demo_on_the_same_server() {
        assert_eq!(
            demo_of("postgres://u:pw@db:5433/soundtrend?sslmode=require"),
            "postgres://u:pw@db:5433/soundtrend_demo?sslmode=require"
        );
        assert_eq!(
            demo_of("postgres://u@db"),
            "postgres://u@db/soundtrend_demo"
        );
        assert_eq!(
            demo_of("postgres://u@db/trial_demo"),
            "postgres://u@db/trial_demo"
        );
    }
}
