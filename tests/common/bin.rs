//! The `soundtrend` binary as a user runs it, from integration tests.

use std::process::{Command, Output, Stdio};

use super::TestApp;

pub const BIN: &str = env!("CARGO_BIN_EXE_soundtrend");

/// The binary with a clean environment: the test database, no credentials, no admin port.
pub fn soundtrend(app: &TestApp, base: &str) -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "KEYAPI_API_KEY",
        "ECHOTIK_USERNAME",
        "ECHOTIK_PASSWORD",
        "RUST_LOG",
        "NO_COLOR",
    ] {
        c.env_remove(var);
    }
    c.env("DATABASE_URL", &app.url)
        .env("SOUNDTREND__PROVIDER__BASE_URL", base)
        .env("SOUNDTREND__ADMIN__LISTEN", "")
        .env("SOUNDTREND__PROVIDER__RETRY_BASE_DELAY", "10ms")
        .env("SOUNDTREND__PROVIDER__RETRY_MAX_DELAY", "20ms")
        .env("SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND", "100")
        .env("SOUNDTREND__PROVIDER__BURST", "10")
        .stdin(Stdio::null());
    c
}

/// `soundtrend poll` of the sample clip in US over 7 days, against a local mock of `KeyAPI`.
pub async fn poll_sample(app: &TestApp) -> Output {
    let server = &app.provider;
    let mut c = soundtrend(app, &server.base);
    c.env("KEYAPI_API_KEY", super::API_KEY).args([
        "poll",
        "--clip-id",
        super::CLIP,
        "--region",
        "US",
        "--period",
        "7",
    ]);
    output(c).await
}

pub async fn output(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("binary runs"))
        .await
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Watches the sample clip in `regions` and polls each through the binary (a 30-day window,
/// then a 7-day one), as a user would.
pub async fn poll_sample_in(app: &TestApp, regions: &[&str]) {
    for region in regions {
        app.watch(super::CLIP, region).await;
        for period in ["30", "7"] {
            let mut c = soundtrend(app, &app.provider.base);
            c.env("KEYAPI_API_KEY", super::API_KEY).args([
                "poll",
                "--clip-id",
                super::CLIP,
                "--region",
                region,
                "--period",
                period,
            ]);
            let out = output(c).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        }
    }
}
