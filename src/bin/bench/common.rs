//! Shared benchmark plumbing: throwaway databases and the fake provider (both from the library,
//! shared with the tests), process statistics.

use std::time::{Duration, Instant};

pub use soundtrend::provider::fake::FakeProvider;
pub use soundtrend::testkit::FreshDatabase;

/// The Postgres server benchmarks create their databases on: `DATABASE_URL` or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, migrated database named for the benchmark `tag`; drop it with
/// [`FreshDatabase::drop_now`].
pub async fn database(tag: &str) -> anyhow::Result<FreshDatabase> {
    FreshDatabase::create(&server_url(), &format!("soundtrend_bench_{tag}")).await
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let ticks = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let cpu = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ProcStats {
        // utime and stime are fields 14 and 15 (1-based) of stat, i.e. 11 and 12 after the name.
        cpu_s: (cpu(11) + cpu(12)) / ticks,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    }
}

/// CPU seconds used so far by every `postgres` process on the machine (the database's share).
pub fn postgres_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(std::result::Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| proc_stats(pid).cpu_s)
        .sum()
}

/// The p-th percentile (0..=100) of `values`, nearest rank.
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0) as usize;
    values[rank.min(values.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The most arrivals within any `window` (sliding, anchored at each arrival).
pub fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort_unstable();
    let (mut best, mut start) = (0, 0);
    for end in 0..t.len() {
        while t[end].duration_since(t[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// The `soundtrend` binary built next to this benchmark.
pub fn soundtrend_binary() -> anyhow::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("soundtrend");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build both binaries first (cargo build --release --bins)",
        bin.display()
    );
    Ok(bin)
}

/// COPY text-format escaping.
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}
