//! Rate-limit precision: real `soundtrend run` processes sharing one quota in Postgres, against a
//! local provider that timestamps every request. The most requests in any sliding second must stay
//! within R + burst, utilization must reach 97 % of R, and after a 429 with Retry-After no request
//! may arrive before the time the provider named.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::common::{max_in_window, ms, soundtrend_binary, FakeProvider, FreshDatabase};

pub struct RateLimitArgs {
    pub rate: f64,
    pub burst: u32,
    pub seconds: u64,
    pub instances: Vec<usize>,
}

/// Polls in flight per instance.
const CONCURRENCY: usize = 8;
/// Utilization a run must reach to pass.
const TARGET_UTILIZATION: f64 = 0.97;
/// The 429 scenario: how long the provider answers 429, and the Retry-After it sends.
const THROTTLE_FOR: Duration = Duration::from_secs(1);
const RETRY_AFTER_S: u64 = 2;
/// Requests that arrive this soon after the first 429 were sent before any client saw it.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(100);
/// How long the instances may take to send their first request.
const START_TIMEOUT: Duration = Duration::from_mins(1);
/// How long a `SIGTERMed` instance may take to exit before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(args: &RateLimitArgs) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "the rate must be positive"
    );
    anyhow::ensure!(args.burst >= 1, "the burst must be at least 1");
    anyhow::ensure!(args.seconds >= 2, "a run must last at least 2 seconds");
    anyhow::ensure!(
        !args.instances.is_empty() && args.instances.iter().all(|&n| n >= 1),
        "instances: at least one count, each at least 1"
    );
    let bin = soundtrend_binary()?;
    let r = args.rate;
    let bound = r + f64::from(args.burst);
    let backlog = backlog_size(args);

    let mut out = String::new();
    writeln!(out, "## Rate-limit precision\n")?;
    writeln!(
        out,
        "Quota R = {r} req/s with burst {b}, held in Postgres and shared by every `soundtrend run` \
         instance ({CONCURRENCY} polls in flight each), against a local provider that timestamps \
         every request; {backlog} entries due, so the instances always have work. Each run lasts \
         {s} s from the first request to reach the provider; only requests in that span count.\n",
        b = args.burst,
        s = args.seconds,
    )?;
    writeln!(
        out,
        "Utilization (steady) = requests after the first second / ((seconds − 1) × R), so the initial \
         burst does not inflate it; overall = all requests / (seconds × R). Passes when the most \
         requests in any sliding 1 s window is at most R + burst and steady utilization is at least \
         {:.0} %.\n",
        TARGET_UTILIZATION * 100.0
    )?;
    writeln!(out, "| instances | R | burst | requests | seconds | req/s | utilization (steady) | max in any 1 s | bound R+burst | result |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let mut densest = Vec::new();
    for &n in &args.instances {
        let m = measure(&bin, args, n, false).await?;
        let secs = args.seconds as f64;
        let steady_from = m.first + Duration::from_secs(1);
        let steady = m.arrivals.iter().filter(|&&t| t >= steady_from).count();
        let steady_util = steady as f64 / ((secs - 1.0) * r);
        let overall_util = m.arrivals.len() as f64 / (secs * r);
        let max1 = max_in_window(&m.arrivals, Duration::from_secs(1));
        densest.push(format!(
            "- {n} instance(s): the densest second starts {} after the first request; as sent \
             (`fetches.requested_at`, soundtrend's clock), at most {} in any 1 s; entries polled \
             twice: {}; requests the provider saw in each whole second: {}",
            m.densest_second(max1),
            max_in_window(&m.sent, Duration::from_secs(1)),
            m.double_polled,
            m.per_second()
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let within_bound = max1 as f64 <= bound + 1e-9;
        let utilized = steady_util >= TARGET_UTILIZATION;
        let result = match (within_bound, utilized) {
            (true, true) => "PASS".to_owned(),
            (false, true) => "**FAIL**: bound exceeded".to_owned(),
            (true, false) => "**FAIL**: utilization below 97 %".to_owned(),
            (false, false) => "**FAIL**: bound exceeded, utilization below 97 %".to_owned(),
        };
        writeln!(
            out,
            "| {n} | {r} | {b} | {req} | {secs} | {rps:.2} | {su:.1} % (overall {ou:.1} %) | {max1} | {bound} | {result}{notes} |",
            b = args.burst,
            req = m.arrivals.len(),
            rps = m.arrivals.len() as f64 / secs,
            su = steady_util * 100.0,
            ou = overall_util * 100.0,
            notes = m.notes(),
        )?;
    }

    writeln!(
        out,
        "\nThe quota grants at most R + burst requests in any closed 1 s span (a full bucket's \
         burst at once, then one every 1/R), by the database's clock at the moment of the grant; \
         the table counts half-open spans by arrival at the provider. R + burst there means the \
         bucket had filled (at the start, after a pause, or after the instances stalled) and the \
         requests' delay between grant and send varied; a request held up between its grant and \
         its send for longer than 1/R (a process not scheduled) can push a span past R + burst.\n\n{}",
        densest.join("\n")
    )?;

    let n = *args.instances.iter().max().expect("checked non-empty");
    let m = measure(&bin, args, n, true).await?;
    writeln!(out, "\n### 429 with Retry-After\n")?;
    writeln!(
        out,
        "Same setup with {n} instance(s); about a third into the run the provider answers every \
         request with 429 and `Retry-After: {RETRY_AFTER_S}` for {throttle} s. t0 is the first 429 \
         sent. Requests arriving within {grace:.0} ms of t0 were already on their way (sent before \
         any client saw a 429) and are allowed; after that nothing may arrive before t0 + \
         {RETRY_AFTER_S} s.\n",
        throttle = THROTTLE_FOR.as_secs_f64(),
        grace = ms(IN_FLIGHT_GRACE),
    )?;
    writeln!(out, "| instances | Retry-After | 429s sent | requests in [t0, t0 + {g:.0} ms] | requests in (t0 + {g:.0} ms, t0 + {RETRY_AFTER_S} s) | first request after the grace | max in any 1 s | bound R+burst | result |", g = ms(IN_FLIGHT_GRACE))?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let max1 = max_in_window(&m.arrivals, Duration::from_secs(1));
    match m.throttled.first() {
        None => writeln!(
            out,
            "| {n} | {RETRY_AFTER_S} s | 0 | – | – | – | {max1} | {bound} | **FAIL**: no request arrived while throttling{} |",
            m.notes()
        )?,
        Some(&t0) => {
            let grace_end = t0 + IN_FLIGHT_GRACE;
            let until = t0 + Duration::from_secs(RETRY_AFTER_S);
            let in_grace = m
                .arrivals
                .iter()
                .filter(|&&t| t >= t0 && t <= grace_end)
                .count();
            let early = m
                .arrivals
                .iter()
                .filter(|&&t| t > grace_end && t < until)
                .count();
            let next = m
                .arrivals
                .iter()
                .find(|&&t| t > grace_end).map_or_else(|| "none".into(), |&t| format!("{:.3} s after t0", t.duration_since(t0).as_secs_f64()));
            let within_bound = max1 as f64 <= bound + 1e-9;
            let result = match (early == 0, within_bound) {
                (true, true) => "PASS".to_owned(),
                (false, true) => "**FAIL**: requests before Retry-After".to_owned(),
                (true, false) => "**FAIL**: bound exceeded".to_owned(),
                (false, false) => {
                    "**FAIL**: requests before Retry-After, bound exceeded".to_owned()
                }
            };
            writeln!(
                out,
                "| {n} | {RETRY_AFTER_S} s | {sent} | {in_grace} | {early} | {next} | {max1} | {bound} | {result}{notes} |",
                sent = m.throttled.len(),
                notes = m.notes(),
            )?;
            writeln!(
                out,
                "\nt0 came {:.3} s after the first request; the densest second starts {}; as sent \
                 (`fetches.requested_at`), at most {} in any 1 s.",
                t0.duration_since(m.first).as_secs_f64(),
                m.densest_second(max1),
                max_in_window(&m.sent, Duration::from_secs(1))
            )?;
        }
    }
    Ok(out)
}

/// Comfortably more entries than the run can poll.
fn backlog_size(args: &RateLimitArgs) -> i64 {
    (args.rate * args.seconds as f64 * 1.5).ceil() as i64 + 100
}

/// What one run saw at the provider.
struct Measured {
    /// First arrival; the run's span starts here.
    first: Instant,
    /// Arrivals within [first, first + seconds], sorted.
    arrivals: Vec<Instant>,
    /// When soundtrend sent each request by its own clock (`fetches.requested_at`), mapped onto
    /// `Instant`s, within the first `seconds` from the first one.
    sent: Vec<Instant>,
    /// When 429s were sent (throttled runs), sorted.
    throttled: Vec<Instant>,
    /// Instances that did not stop cleanly on SIGTERM: (index, how they ended).
    unclean: Vec<(usize, String)>,
    /// Entries with more than one successful fetch (must be 0: each was due once).
    double_polled: i64,
}

impl Measured {
    /// Arrivals per whole second from the first one.
    fn per_second(&self) -> Vec<usize> {
        let mut counts: Vec<usize> = Vec::new();
        for t in &self.arrivals {
            let i = t.duration_since(self.first).as_secs() as usize;
            if counts.len() <= i {
                counts.resize(i + 1, 0);
            }
            counts[i] += 1;
        }
        counts
    }

    /// Where the first 1 s span holding `count` arrivals starts, as an offset from the first.
    fn densest_second(&self, count: usize) -> String {
        let window = Duration::from_secs(1);
        let t = &self.arrivals;
        (0..t.len().saturating_sub(count.saturating_sub(1)))
            .find(|&i| count > 0 && t[i + count - 1].duration_since(t[i]) < window)
            .map_or_else(
                || "–".into(),
                |i| format!("+{:.2} s", t[i].duration_since(self.first).as_secs_f64()),
            )
    }

    fn notes(&self) -> String {
        if self.unclean.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .unclean
            .iter()
            .map(|(i, how)| format!("instance {i} {how}"))
            .collect();
        format!(" ({})", list.join("; "))
    }
}

async fn measure(
    bin: &Path,
    args: &RateLimitArgs,
    n: usize,
    throttle: bool,
) -> anyhow::Result<Measured> {
    let tag = if throttle {
        format!("rl{n}_429")
    } else {
        format!("rl{n}")
    };
    let db = crate::common::database(&tag).await?;
    let result = measure_on(bin, args, n, throttle, &db, &tag).await;
    let dropped = db.drop_now().await;
    let m = result?;
    dropped?;
    Ok(m)
}

async fn measure_on(
    bin: &Path,
    args: &RateLimitArgs,
    n: usize,
    throttle: bool,
    db: &FreshDatabase,
    tag: &str,
) -> anyhow::Result<Measured> {
    sqlx::query(
        "INSERT INTO watchlist (clip_id, region, period)
         SELECT (1000000 + g)::text, 'US', 7 FROM generate_series(1, $1) g",
    )
    .bind(backlog_size(args))
    .execute(&db.pool)
    .await?;
    let server = FakeProvider::start().await?;

    // A directory of its own: the instances' logs, and no stray config.toml in the working dir.
    let dir = std::env::temp_dir().join(format!("soundtrend-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut instances = Instances::default();
    for i in 1..=n {
        let log = dir.join(format!("instance-{i}.log"));
        let child = instance_command(bin, args, db, &server, i, &dir, &log)?.spawn()?;
        instances.children.push((child, log));
    }

    // The run starts with the first request to reach the provider.
    let waiting = Instant::now();
    let first = loop {
        if let Some(first) = server.hits().first() {
            break first.at;
        }
        instances.ensure_running()?;
        anyhow::ensure!(
            waiting.elapsed() < START_TIMEOUT,
            "no request reached the provider within {} s of starting {n} instance(s); logs in {}",
            START_TIMEOUT.as_secs(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let span = Duration::from_secs(args.seconds);
    let end = first + span;

    if throttle {
        sleep_until(first + span / 3).await;
        instances.ensure_running()?;
        server.set_faults(|f| {
            f.limited_until = Some(Instant::now() + THROTTLE_FOR);
            f.retry_after_secs = RETRY_AFTER_S;
        });
    }
    // Wake now and then to notice an instance that died.
    while Instant::now() < end {
        instances.ensure_running()?;
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
    instances.ensure_running()?;
    let unclean = instances.stop().await;

    let hits = server.hits();
    let mut arrivals: Vec<Instant> = hits
        .iter()
        .map(|h| h.at)
        .filter(|&t| t >= first && t <= end)
        .collect();
    arrivals.sort_unstable();
    let sent = sent_times(db, span).await?;
    // An entry stored twice would mean two instances polled it for one due time.
    let double_polled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT clip_id, region FROM fetches WHERE outcome = 'ok'
                               GROUP BY clip_id, region HAVING count(*) > 1) twice",
    )
    .fetch_one(&db.pool)
    .await?;
    let mut throttled: Vec<Instant> = hits.iter().filter(|h| h.limited).map(|h| h.at).collect();
    throttled.sort_unstable();
    if unclean.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Measured {
        first,
        arrivals,
        sent,
        throttled,
        unclean,
        double_polled,
    })
}

/// The send time of every attempt, from the audit log the instances wrote.
async fn sent_times(db: &FreshDatabase, span: Duration) -> anyhow::Result<Vec<Instant>> {
    let times: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT requested_at FROM fetches ORDER BY requested_at")
            .fetch_all(&db.pool)
            .await?;
    let Some(&start) = times.first() else {
        return Ok(Vec::new());
    };
    let base = Instant::now();
    Ok(times
        .iter()
        .filter_map(|&t| (t - start).to_std().ok())
        .filter(|&d| d <= span)
        .map(|d| base + d)
        .collect())
}

fn instance_command(
    bin: &Path,
    args: &RateLimitArgs,
    db: &FreshDatabase,
    server: &FakeProvider,
    i: usize,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<Command> {
    let mut c = Command::new(bin);
    // Nothing inherited may change the setup: credentials, log level, config.
    let inherited: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.starts_with("SOUNDTREND_") || k.starts_with("ECHOTIK_") || k.starts_with("KEYAPI_")
        })
        .collect();
    for k in inherited.iter().map(String::as_str).chain(["RUST_LOG"]) {
        c.env_remove(k);
    }
    let log_file = std::fs::File::create(log)?;
    c.arg("run")
        .current_dir(dir)
        .env("DATABASE_URL", &db.url)
        .env("KEYAPI_API_KEY", "bench-key")
        .env("SOUNDTREND__PROVIDER__NAME", "keyapi")
        .env("SOUNDTREND__PROVIDER__BASE_URL", &server.base)
        .env(
            "SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND",
            args.rate.to_string(),
        )
        .env("SOUNDTREND__PROVIDER__BURST", args.burst.to_string())
        .env("SOUNDTREND__ADMIN__LISTEN", "")
        .env("SOUNDTREND__DAEMON__TICK_CRON", "* * * * * *")
        .env("SOUNDTREND__POLL__CONCURRENCY", CONCURRENCY.to_string())
        .env("SOUNDTREND__DAEMON__INSTANCE_NAME", format!("bench-{i}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    Ok(c)
}

/// The running instances; whatever is still running when this is dropped gets SIGKILL, so no
/// error path leaves a daemon polling behind.
#[derive(Default)]
struct Instances {
    children: Vec<(Child, PathBuf)>,
}

impl Instances {
    /// An error naming the first instance that already exited, with the end of its log.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        for (i, (child, log)) in self.children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                anyhow::bail!(
                    "soundtrend instance {} exited early ({status}); log {}:\n{}",
                    i + 1,
                    log.display(),
                    tail.join("\n")
                );
            }
        }
        Ok(())
    }

    /// SIGTERM to all, then waits up to [`STOP_TIMEOUT`]; SIGKILL for the rest. Returns the
    /// instances (1-based) that did not exit cleanly and how they ended.
    async fn stop(&mut self) -> Vec<(usize, String)> {
        for (child, _) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut ended: Vec<Option<ExitStatus>> = vec![None; self.children.len()];
        loop {
            for (slot, (child, _)) in ended.iter_mut().zip(self.children.iter_mut()) {
                if slot.is_none() {
                    *slot = child.try_wait().ok().flatten();
                }
            }
            if ended.iter().all(Option::is_some) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut unclean = Vec::new();
        for (i, (slot, (child, _))) in ended.iter().zip(self.children.iter_mut()).enumerate() {
            match slot {
                Some(status) if status.success() => {}
                Some(status) => unclean.push((i + 1, format!("exited with {status}"))),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    unclean.push((
                        i + 1,
                        format!(
                            "ignored SIGTERM for {} s and was killed",
                            STOP_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
        }
        unclean
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}
