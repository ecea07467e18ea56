//! Ingest: soundtrend's real poll path (claim → fetch → normalize → write, alone or in commit
//! groups) against a fast local provider with the rate limit lifted, compared with COPY of the
//! very same rows into the same tables and indexes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::json;
use soundtrend::clock::SystemClock;
use soundtrend::config::Settings;
use soundtrend::domain::{ClipId, Period, Region};
use soundtrend::normalize::lists::{hex, list_id};
use soundtrend::normalize::{normalize, Normalized, Observation};
use soundtrend::poll::{PollOptions, Poller};
use soundtrend::poll::{Worker, WorkerOptions};
use soundtrend::provider::wire::{Envelope, MusicDetail};
use soundtrend::provider::{ClientOptions, Credentials, ProviderClient, ProviderKind};
use tokio_util::sync::CancellationToken;

use crate::common::{esc, ms, percentile, postgres_cpu_s, proc_stats, FakeProvider};

pub struct IngestArgs {
    pub sizes: Vec<usize>,
    pub concurrency: usize,
    /// 7, 30, 120, or 0 for a mix.
    pub period: i16,
    /// `poll.commit_group` values, each measured in a run of its own.
    pub commit_groups: Vec<usize>,
}

const TITLES: [&str; 6] = [
    "New Sun",
    "夜に駆ける",
    "Ñandú en la noche 🎵",
    "Привет, мир",
    "Café Olé — remix",
    "사랑해 (Acoustic)",
];
const REGIONS: [&str; 8] = ["US", "GB", "DE", "FR", "BR", "JP", "KR", "MX"];

/// One watched entry and the response the provider will give for it.
struct Case {
    clip_id: String,
    region: &'static str,
    period: i16,
    body: Bytes,
}

fn cases(n: usize, period: i16) -> Vec<Case> {
    let last_day = Utc::now().date_naive() - chrono::Duration::days(1);
    (0..n)
        .map(|i| {
            let clip_id = format!("{}", 7_000_000_000_000_000_000u64 + i as u64);
            let region = REGIONS[i % REGIONS.len()];
            let period = if period == 0 {
                [7, 30, 120][i % 3]
            } else {
                period
            };
            let kind = if i % 2 == 0 {
                ProviderKind::KeyApi
            } else {
                ProviderKind::EchoTik
            };
            let mut body = soundtrend::provider::fake::response(
                kind,
                &clip_id,
                region,
                i64::from(period),
                last_day,
            );
            let sound = &mut body["data"]["sound"];
            sound["title"] = json!(format!("{} #{i}", TITLES[i % TITLES.len()]));
            sound["rank"] = if i % 3 == 0 {
                json!(null)
            } else {
                json!(i % 500 + 1)
            };
            sound["rank_diff"] = if i % 3 == 0 {
                json!(null)
            } else {
                json!((i % 21) as i64 - 10)
            };
            Case {
                clip_id,
                region,
                period,
                body: Bytes::from(body.to_string()),
            }
        })
        .collect()
}

struct Measured {
    responses: usize,
    rows: i64,
    wall: Duration,
    p50: Duration,
    p99: Duration,
    cpu_s: f64,
    db_cpu_s: f64,
}

pub async fn run(args: &IngestArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    let period_label = if args.period == 0 {
        "mixed 7/30/120".to_owned()
    } else {
        args.period.to_string()
    };
    writeln!(
        out,
        "## Ingest (period {period_label}, concurrency {}, rate limit lifted)\n",
        args.concurrency
    )?;
    writeln!(out, "| N | commit group | responses/s | rows/s | p50 poll | p99 poll | bench CPU s | postgres CPU s | peak RSS (bench) | COPY rows/s | ratio to COPY |")?;
    writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let mut budget = Vec::new();
    for &n in &args.sizes {
        let cases = cases(n, args.period);
        let copy = copy_path(&cases).await?;
        let copy_rows_per_s = copy.rows as f64 / copy.wall.as_secs_f64();
        for &group in &args.commit_groups {
            let live = poll_path(&cases, args.concurrency, group).await?;
            let rows_per_s = live.rows as f64 / live.wall.as_secs_f64();
            writeln!(
                out,
                "| {n} | {group} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} | {:.1} | {} MiB | {:.0} | **{:.2}** |",
                live.responses as f64 / live.wall.as_secs_f64(),
                rows_per_s,
                ms(live.p50),
                ms(live.p99),
                live.cpu_s,
                live.db_cpu_s,
                proc_stats(std::process::id()).peak_rss_kib / 1024,
                copy_rows_per_s,
                rows_per_s / copy_rows_per_s
            )?;
            eprintln!("ingest N={n} commit_group={group}: {rows_per_s:.0} rows/s live, {copy_rows_per_s:.0} rows/s COPY");
            // Where the CPU goes per response, and what it allows: with every core busy, the
            // path cannot answer faster than cores / (CPU per response).
            let per = |s: f64| s * 1e3 / live.responses as f64;
            let cpu_bound = cores / (live.cpu_s + live.db_cpu_s) * live.responses as f64;
            let copy_per_s = n as f64 / copy.wall.as_secs_f64();
            budget.push(format!(
                "| {n} | {group} | {:.2} | {:.2} | {:.2} | {:.1}× | {:.0} | {:.2} |",
                per(live.cpu_s),
                per(live.db_cpu_s),
                copy.db_cpu_s * 1e3 / n as f64,
                live.db_cpu_s / copy.db_cpu_s,
                cpu_bound,
                cpu_bound / copy_per_s,
            ));
        }
    }
    writeln!(
        out,
        "\nCPU per response, ms ({cores} cores; the bench process is soundtrend's poll path and the provider stand-in):\n"
    )?;
    writeln!(out, "| N | commit group | bench process | postgres | postgres under COPY | postgres, live / COPY | responses/s the CPU allows | that, as a ratio to COPY |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for line in &budget {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "\nRows count every table written: fetches (with the raw body), sounds, sound_snapshots, trend_points, \
         audience_countries, audience_interests. Commit group 1 writes each response in a transaction of its own; a \
         larger group commits the responses that finish while another write runs in one transaction (all or nothing, \
         per group). COPY loads the same rows, already normalized, in one transaction per table."
    )?;
    Ok(out)
}

async fn poll_path(
    cases: &[Case],
    concurrency: usize,
    commit_group: usize,
) -> anyhow::Result<Measured> {
    let db = crate::common::database("ingest").await?;
    let clips: Vec<&str> = cases.iter().map(|c| c.clip_id.as_str()).collect();
    let regions: Vec<&str> = cases.iter().map(|c| c.region).collect();
    let periods: Vec<i16> = cases.iter().map(|c| c.period).collect();
    sqlx::query("INSERT INTO watchlist (clip_id, region, period) SELECT * FROM UNNEST($1::text[], $2::text[], $3::int2[])")
        .bind(&clips)
        .bind(&regions)
        .bind(&periods)
        .execute(&db.pool)
        .await?;
    sqlx::query("ANALYZE watchlist").execute(&db.pool).await?;
    let bodies: HashMap<String, Bytes> = cases
        .iter()
        .map(|c| (c.clip_id.clone(), c.body.clone()))
        .collect();
    let server = FakeProvider::builder().bodies(bodies).start().await?;

    let mut settings = Settings::default();
    settings.database.url = db.url.clone().into();
    settings.provider.requests_per_second = 1_000_000.0;
    settings.provider.burst = std::num::NonZeroU32::new(1_000_000).expect("not zero");
    settings.poll.concurrency = (concurrency / 2).max(1);
    settings.poll.claim_batch = 100;
    settings.poll.commit_group = commit_group;
    settings.database.max_connections = concurrency as u32 + 4;
    let pool = soundtrend::store::pool(&settings.database)?;

    let mut workers = Vec::new();
    for (i, kind) in [ProviderKind::KeyApi, ProviderKind::EchoTik]
        .into_iter()
        .enumerate()
    {
        let credentials = match kind {
            ProviderKind::KeyApi => Credentials::Bearer("bench-key".to_owned().into()),
            ProviderKind::EchoTik => Credentials::Basic {
                username: "bench".into(),
                password: "bench".to_owned().into(),
            },
        };
        let options = ClientOptions {
            base_url: server.base.parse()?,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            user_agent: "soundtrend-bench".into(),
            max_body_bytes: settings.provider.max_body_bytes,
        };
        let client =
            ProviderClient::new(kind, credentials, &options).map_err(anyhow::Error::msg)?;
        soundtrend::store::quota::ensure_provider(&pool, kind).await?;
        let poller = Arc::new(Poller::new(
            pool.clone(),
            client,
            soundtrend::app::quota_params(&soundtrend::config::ProviderSettings {
                name: kind,
                ..settings.provider.clone()
            }),
            PollOptions::from_settings(&settings),
            Arc::new(SystemClock),
        ));
        let mut opts = WorkerOptions::from_settings(&settings);
        opts.owner = format!("bench-{i}");
        opts.record_latencies = true;
        workers.push(Worker::new(poller, opts));
    }

    let cancel = CancellationToken::new();
    let cpu0 = proc_stats(std::process::id()).cpu_s;
    let db_cpu0 = postgres_cpu_s();
    let started = Instant::now();
    let b = workers.pop().expect("two workers");
    let a = workers.pop().expect("two workers");
    // Both dialects at once: a KeyAPI and an EchoTik worker share the watchlist.
    let (ra, rb) = tokio::join!(a.drain(&cancel), b.drain(&cancel));
    let wall = started.elapsed();
    let cpu_s = proc_stats(std::process::id()).cpu_s - cpu0;
    let db_cpu_s = postgres_cpu_s() - db_cpu0;
    let (ra, rb) = (ra?, rb?);
    anyhow::ensure!(
        ra.failed + rb.failed == 0,
        "polls failed during the benchmark: {ra:?} {rb:?}"
    );
    let mut latencies = ra.latencies;
    latencies.extend(rb.latencies);
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM fetches) + (SELECT count(*) FROM sounds) + (SELECT count(*) FROM sound_snapshots)
              + (SELECT count(*) FROM trend_points) + (SELECT count(*) FROM audience_countries)
              + (SELECT count(*) FROM audience_interests)",
    )
    .fetch_one(&pool)
    .await?;
    let responses = (ra.stored + rb.stored) as usize;
    anyhow::ensure!(
        responses == cases.len(),
        "stored {responses} of {} responses",
        cases.len()
    );
    pool.close().await;
    db.drop_now().await?;
    Ok(Measured {
        responses,
        rows,
        wall,
        p50: percentile(&mut latencies, 50.0),
        p99: percentile(&mut latencies, 99.0),
        cpu_s,
        db_cpu_s,
    })
}

/// What COPY of the same rows took: rows, wall time, and the CPU seconds Postgres spent.
struct Copied {
    rows: i64,
    wall: Duration,
    db_cpu_s: f64,
}

/// COPY of the same normalized rows into a fresh database.
async fn copy_path(cases: &[Case]) -> anyhow::Result<Copied> {
    let observed_at = Utc::now();
    let mut buffers = CopyBuffers::default();
    for (i, case) in cases.iter().enumerate() {
        let fetch_id = i as i64 + 1; // identity values of a fresh table, in COPY order
        let env: Envelope = serde_json::from_slice(&case.body)?;
        let detail: MusicDetail = serde_json::from_value(env.data.clone().expect("data"))?;
        let obs = Observation {
            clip_id: ClipId::parse(&case.clip_id)?,
            region: Region::parse(case.region)?,
            period: Period::from_days(case.period.into())?,
            observed_at,
        };
        let rows = normalize(&detail, &obs)?;
        buffers.add(
            fetch_id,
            case,
            &obs,
            &rows,
            std::str::from_utf8(&case.body)?,
            env.request_id.as_deref(),
        );
    }
    let db = crate::common::database("copy").await?;
    let mut conn = db.pool.acquire().await?;
    let db_cpu0 = postgres_cpu_s();
    let started = Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for (table, columns, data) in buffers.tables() {
        let mut copy = tx
            .copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN"))
            .await?;
        copy.send(data.as_bytes()).await?;
        copy.finish().await?;
    }
    tx.commit().await?;
    let wall = started.elapsed();
    let db_cpu_s = postgres_cpu_s() - db_cpu0;
    drop(conn);
    let rows = buffers.rows;
    db.drop_now().await?;
    Ok(Copied {
        rows,
        wall,
        db_cpu_s,
    })
}

#[derive(Default)]
struct CopyBuffers {
    fetches: String,
    sounds: String,
    snapshots: String,
    trend: String,
    countries: String,
    interests: String,
    /// Audience lists already in the buffers: each distinct list of a pair is stored once.
    lists: std::collections::HashSet<soundtrend::normalize::lists::ListId>,
    rows: i64,
}

impl CopyBuffers {
    fn add(
        &mut self,
        fetch_id: i64,
        case: &Case,
        obs: &Observation,
        rows: &Normalized,
        body: &str,
        request_id: Option<&str>,
    ) {
        let at = ts(obs.observed_at);
        let (clip, region, period) = (&case.clip_id, case.region, case.period);
        let _ = writeln!(
            self.fetches,
            "{clip}\t{region}\t{period}\tkeyapi\t{at}\t1\t200\tok\t{}\t1\t2\t{}",
            opt(request_id),
            esc(body)
        );
        let s = &rows.sound;
        let _ = writeln!(
            self.sounds,
            "{clip}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{at}\t{at}\t{fetch_id}",
            opt(s.song_id.as_deref()),
            opt(s.title.as_deref()),
            opt(s.author.as_deref()),
            opt(s.url_title.as_deref()),
            opt(s.duration),
            opt(s.cover.as_deref()),
            opt(s.link.as_deref()),
            opt(s.music_url.as_deref()),
            opt(s.if_cml),
            opt(s.is_search),
            opt(s.promoted)
        );
        let n = &rows.snapshot;
        let list_ids = [&rows.countries, &rows.interests].map(|list| list_id(clip, region, list));
        let _ = writeln!(
            self.snapshots,
            "{fetch_id}\t{clip}\t{region}\t{period}\t{at}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            opt(n.country_code.as_deref()),
            opt(n.rank),
            opt(n.rank_diff),
            opt(n.on_list_times),
            opt(n.popular_days),
            opt(n.current_popularity),
            opt(n.like_count),
            rows.trend.len(),
            opt(list_ids[0].as_ref().map(hex)),
            opt(list_ids[1].as_ref().map(hex))
        );
        for t in &rows.trend {
            let _ = writeln!(
                self.trend,
                "{clip}\t{region}\t{}\t{}\t{fetch_id}\t{period}\t{at}",
                ts(t.ts),
                t.value
            );
        }
        for (buf, list, id) in [
            (&mut self.countries, &rows.countries, list_ids[0]),
            (&mut self.interests, &rows.interests, list_ids[1]),
        ] {
            let Some(id) = id.filter(|id| self.lists.insert(*id)) else {
                continue;
            };
            for a in list {
                let _ = writeln!(
                    buf,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    esc(&hex(&id)),
                    a.position,
                    opt(a.provider_id.as_deref()),
                    opt(a.code.as_deref()),
                    opt(a.name.as_deref()),
                    opt(a.score)
                );
            }
        }
        self.rows += 3 + (rows.trend.len() + rows.countries.len() + rows.interests.len()) as i64;
    }

    fn tables(&self) -> [(&'static str, &'static str, &str); 6] {
        [
            ("fetches", "clip_id, region, period, provider, requested_at, duration_ms, http_status, outcome, request_id, attempt, credits, body_json", &self.fetches),
            ("sounds", "clip_id, song_id, title, author, url_title, duration, cover, link, music_url, if_cml, is_search, promoted, first_seen_at, last_seen_at, last_fetch_id", &self.sounds),
            ("sound_snapshots", "fetch_id, clip_id, region, period, observed_at, country_code, rank, rank_diff, on_list_times, popular_days, current_popularity, like_count, trend_points, countries_list, interests_list", &self.snapshots),
            ("trend_points", "clip_id, region, ts, value, fetch_id, period, observed_at", &self.trend),
            ("audience_country_lists", "list_id, position, provider_id, country_code, country_name, score", &self.countries),
            ("audience_interest_lists", "list_id, position, interest_id, label, name, score", &self.interests),
        ]
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "\\N".into(), |v| esc(&v.to_string()))
}
