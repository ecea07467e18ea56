use std::sync::atomic::{AtomicUsize, Ordering};

use figment::providers::{Format, Toml};

use super::*;

/// Loads `toml` with `env` applied. `SOUNDTREND__…` and `DATABASE_URL` are renamed to variables
/// only this call uses, so tests running side by side (and the shell's own `DATABASE_URL`) never
/// see each other's environment; the real names are covered by tests/cli.rs.
fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("SOUNDTREND_UNIT_{n}__");
    let database_var = format!("SOUNDTREND_UNIT_{n}_DATABASE_URL");
    let renamed: Vec<(String, &str)> = env
        .iter()
        .map(|(k, v)| match k.strip_prefix("SOUNDTREND__") {
            Some(rest) => (format!("{prefix}{rest}"), *v),
            None if *k == "DATABASE_URL" => (database_var.clone(), *v),
            None => panic!("{k} is not a variable the loader reads"),
        })
        .collect();
    for (k, v) in &renamed {
        std::env::set_var(k, v);
    }
    let result = Settings::from_layers(
        Some(Toml::string(toml)),
        &prefix,
        &database_var,
        "test.toml",
    );
    for (k, _) in &renamed {
        std::env::remove_var(k);
    }
    result
}

fn err(toml: &str, env: &[(&str, &str)]) -> String {
    match load(toml, env) {
        Ok(_) => panic!("loaded: {toml:?} with {env:?}"),
        Err(e) => e.to_string(),
    }
}

/// Every leaf key of a TOML table, dotted (`provider.burst`), with its value.
fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaves(&key, t, out),
            v => out.push((key, v.clone())),
        }
    }
}

fn leaves_of(settings: &Settings) -> Vec<(String, toml::Value)> {
    let toml::Value::Table(t) = toml::Value::try_from(settings).unwrap() else {
        panic!("settings serialize to a table")
    };
    let mut out = Vec::new();
    leaves("", &t, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_shipped_config_file_holds_every_key_at_its_default() {
    let shipped = include_str!("../../config.toml");
    let mut in_file = Vec::new();
    leaves("", &shipped.parse::<toml::Table>().unwrap(), &mut in_file);
    let mut file_keys: Vec<&str> = in_file.iter().map(|(k, _)| k.as_str()).collect();
    file_keys.sort_unstable();
    let defaults = leaves_of(&Settings::default());
    let default_keys: Vec<&str> = defaults.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        file_keys, default_keys,
        "config.toml must list every key, and only those"
    );

    // Compared as loaded, so "60s" in the file equals a default of one minute.
    let loaded = leaves_of(&load(shipped, &[]).unwrap());
    for ((key, shown), (_, default)) in loaded.iter().zip(&defaults) {
        assert_eq!(
            shown, default,
            "config.toml documents {key} = {shown}, but its default is {default}"
        );
    }
    assert!(defaults.len() >= 36, "{} keys", defaults.len());
}

#[test]
fn the_key_check_notices_a_changed_default() {
    let mut d = Settings::default();
    d.provider.burst = NonZeroU32::new(2).unwrap();
    let shipped = leaves_of(&load(include_str!("../../config.toml"), &[]).unwrap());
    let differs: Vec<String> = shipped
        .iter()
        .zip(leaves_of(&d))
        .filter(|(a, b)| **a != *b)
        .map(|(a, _)| a.0.clone())
        .collect();
    assert_eq!(differs, ["provider.burst"]);
}

#[test]
fn environment_overrides_the_file() {
    let s = load(
        "[provider]\nname = \"keyapi\"\nburst = 3\n",
        &[
            ("SOUNDTREND__PROVIDER__NAME", "echotik"),
            ("SOUNDTREND__PROVIDER__REQUESTS_PER_SECOND", "2.5"),
            ("SOUNDTREND__PROVIDER__BASE_URL", "http://127.0.0.1:9"),
            ("SOUNDTREND__PROVIDER__REQUEST_TIMEOUT", "2s"),
            ("SOUNDTREND__POLL__LEASE_TTL", "4s"),
            ("SOUNDTREND__DAEMON__TICK_CRON", "*/1 * * * * *"),
            ("SOUNDTREND__PROVIDER__NOT_FOUND_CODES", "[404, 40401]"),
            ("DATABASE_URL", "postgres://u:pw@db/x"),
        ],
    )
    .unwrap();
    assert_eq!(s.provider.name, ProviderKind::EchoTik);
    assert_eq!(s.provider.burst.get(), 3);
    assert_eq!(s.provider.requests_per_second, 2.5);
    assert_eq!(s.provider.endpoint().as_str(), "http://127.0.0.1:9/");
    assert_eq!(s.poll.lease_ttl, Duration::from_secs(4));
    assert_eq!(s.daemon.tick_cron.as_str(), "*/1 * * * * *");
    assert_eq!(s.provider.not_found_codes, [404, 40401]);
    assert_eq!(s.database.redacted_url(), "postgres://u:REDACTED@db/x");
}

#[test]
fn an_empty_admin_listen_disables_the_endpoint_from_the_file_or_the_environment() {
    assert_eq!(
        Settings::default().admin.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9187)))
    );
    assert_eq!(
        load("[admin]\nlisten = \"\"\n", &[]).unwrap().admin.listen,
        None
    );
    let s = load("", &[("SOUNDTREND__ADMIN__LISTEN", "")]).unwrap();
    assert_eq!(s.admin.listen, None);
    let s = load("", &[("SOUNDTREND__ADMIN__LISTEN", "[::1]:9")]).unwrap();
    assert_eq!(s.admin.listen, Some("[::1]:9".parse().unwrap()));
}

#[test]
fn an_empty_database_url_variable_keeps_the_configured_one() {
    let s = load(
        "[database]\nurl = \"postgres://a@h/db\"\n",
        &[("DATABASE_URL", "")],
    )
    .unwrap();
    assert_eq!(s.database.redacted_url(), "postgres://a@h/db");
}

#[test]
fn passwords_in_the_query_string_are_redacted_too() {
    let r = redact_url("postgres://u@db/x?password=hunter2&sslmode=require");
    assert!(!r.contains("hunter2"), "{r}");
    assert!(
        r.contains("password=REDACTED") && r.contains("sslmode=require"),
        "{r}"
    );
    let r = redact_url("postgres://u:pw@db/x?sslpassword=k");
    assert!(!r.contains("pw@") && !r.contains("=k"), "{r}");
}

#[test]
fn a_remote_database_without_tls_is_warned_about() {
    assert!(database_tls_warning("postgres://u@db.example.com/x").is_some());
    assert!(database_tls_warning("postgres://u@db.example.com/x?sslmode=prefer").is_some());
    assert!(database_tls_warning("postgres://u@db.example.com/x?sslmode=verify-full").is_none());
    assert!(database_tls_warning("postgres://u@127.0.0.1:5432/x").is_none());
    assert!(database_tls_warning("postgres://u@localhost/x").is_none());
    assert!(database_tls_warning("postgres:///x?host=/run/postgresql").is_none());
}

#[test]
fn plain_http_is_refused_unless_the_host_is_this_machine() {
    let e = err("[provider]\nbase_url = \"http://api.example.com/\"\n", &[]);
    assert!(
        e.contains("provider.base_url") && e.contains("cleartext"),
        "{e}"
    );
    for ok in [
        "http://127.0.0.1:9/",
        "http://localhost:8080/",
        "http://[::1]:9/",
    ] {
        load(&format!("[provider]\nbase_url = \"{ok}\"\n"), &[]).unwrap();
    }
    load(
        "[provider]\nbase_url = \"http://mock:80/\"\nallow_insecure_http = true\n",
        &[],
    )
    .unwrap();
    let e = err("[provider]\nbase_url = \"ftp://api.example.com/\"\n", &[]);
    assert!(
        e.contains("provider.base_url") && e.contains("http(s)"),
        "{e}"
    );
}

#[test]
fn extreme_rates_and_body_caps_are_refused_not_panicked_on() {
    for rps in ["1e-30", "5e-20", "1e12", "nan", "inf"] {
        let e = err(&format!("[provider]\nrequests_per_second = {rps}\n"), &[]);
        assert!(
            e.contains("provider.requests_per_second") && e.contains("between"),
            "{e}"
        );
    }
    let e = err("[provider]\nmax_body_bytes = 10\n", &[]);
    assert!(e.contains("provider.max_body_bytes"), "{e}");
}

#[test]
fn a_bad_value_names_its_key_and_the_fix_on_one_line() {
    // (TOML, environment, the key the error must name, a word of the fix it must give)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "[provider]\nrequests_per_second = 0\n",
            &[],
            "provider.requests_per_second",
            "between",
        ),
        (
            "[provider]\nname = \"tiktok\"\n",
            &[],
            "provider.name",
            "keyapi",
        ),
        (
            "[provider]\nburst = 0\n",
            &[],
            "provider.burst",
            "must be at least 1",
        ),
        (
            "",
            &[("SOUNDTREND__PROVIDER__BURST", "0")],
            "provider.burst",
            "__PROVIDER__BURST)",
        ),
        (
            "[provider]\nmax_attempts = 21\n",
            &[],
            "provider.max_attempts",
            "between 1 and 20",
        ),
        (
            "[provider]\ndisable_after_not_found = 0\n",
            &[],
            "provider.disable_after_not_found",
            "must be at least 1",
        ),
        (
            "[poll]\nlease_ttl = \"soon\"\n",
            &[],
            "poll.lease_ttl",
            "\"30s\"",
        ),
        (
            "[poll]\ndefault_period = 14\n",
            &[],
            "poll.default_period",
            "14",
        ),
        ("[provider]\nbrust = 2\n", &[], "provider.brust", "burst"),
        (
            "",
            &[("SOUNDTREND__POLL__CONCURRENCY", "many")],
            "poll.concurrency",
            "__POLL__CONCURRENCY)",
        ),
        (
            "[poll]\nconcurrency = 0\n",
            &[],
            "poll.concurrency",
            "between 1 and 1024",
        ),
        (
            "[poll]\ncommit_group = 0\n",
            &[],
            "poll.commit_group",
            "between 1 and 1000",
        ),
        (
            "[provider]\nrequests_per_second = 0.01\n",
            &[],
            "poll.lease_ttl",
            "8 request slots",
        ),
        (
            "[daemon]\ntick_cron = \"* * * * *\"\n",
            &[],
            "daemon.tick_cron",
            "6 fields",
        ),
        (
            "[daemon]\nmaintenance_cron = \"0 61 * * * *\"\n",
            &[],
            "daemon.maintenance_cron",
            "6 fields",
        ),
        (
            "[admin]\nlisten = \"localhost\"\n",
            &[],
            "admin.listen",
            "127.0.0.1:9187",
        ),
        (
            "[log]\nlevel = \"soundtrend=loud\"\n",
            &[],
            "log.level",
            "soundtrend=debug",
        ),
        (
            "[database]\nurl = \"mysql://x\"\n",
            &[],
            "database.url",
            "postgres://",
        ),
        (
            "",
            &[("SOUNDTREND__NOPE__KEY", "1")],
            "nope",
            "__NOPE__<KEY>)",
        ),
    ];
    for (toml, env, key, fix) in cases {
        let e = err(toml, env);
        assert!(
            e.starts_with(&format!("config key `{key}`: ")),
            "{key}: {e}"
        );
        assert!(e.contains(fix), "{key}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn a_file_that_is_not_toml_is_reported_on_one_line_with_its_line_number() {
    let e = err("[provider\nburst = 1\n", &[]);
    assert!(
        e.starts_with("config file test.toml is not valid TOML: "),
        "{e}"
    );
    assert!(e.contains("line 1"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn a_missing_file_is_an_error_only_when_it_was_asked_for() {
    let missing = std::path::Path::new("/nonexistent/soundtrend.toml");
    let e = Settings::load(missing, true).unwrap_err().to_string();
    assert!(
        e.starts_with("cannot read config file /nonexistent/soundtrend.toml"),
        "{e}"
    );
    assert!(Settings::load(missing, false).is_ok());
}

#[test]
fn a_cron_expression_loads_exactly_when_the_scheduler_accepts_it() {
    for expr in [
        "*/10 * * * * *",
        "0 0 0 1 1 *",
        "0 */5 9-17 * * MON-FRI",
        "* * * * *",
        "* * * * * * *",
        "0 61 * * * *",
        "every minute",
        "",
        "0 0 0 31 2 *",
    ] {
        let ours = expr.parse::<CronExpr>().is_ok();
        let scheduler =
            tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {})).is_ok();
        assert_eq!(ours, scheduler, "{expr:?}");
    }
}

#[test]
fn debug_output_hides_the_database_password() {
    let s = load(
        "",
        &[(
            "DATABASE_URL",
            "postgres://u:s3cr3t-pass@db/x?password=p4ss",
        )],
    )
    .unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("s3cr3t-pass") && !shown.contains("p4ss"),
        "{shown}"
    );
    let serialized = toml::to_string(&s).unwrap();
    assert!(
        !serialized.contains("s3cr3t-pass") && !serialized.contains("p4ss"),
        "{serialized}"
    );
}

#[test]
fn the_readme_configuration_table_lists_every_key() {
    let readme = include_str!("../../README.md");
    for (key, _) in leaves_of(&Settings::default()) {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "README.md's configuration table lacks {key}"
        );
    }
}

#[test]
fn two_providers_load_in_order_each_with_its_own_keys_and_environment_overrides() {
    let s = load(
        "[providers]\norder = [\"echotik\", \"keyapi\"]\n\
         [providers.keyapi]\nrequests_per_second = 2.0\ndaily_credit_budget = 100\n\
         [providers.echotik]\nburst = 3\n",
        &[
            (
                "SOUNDTREND__PROVIDERS__KEYAPI__BASE_URL",
                "http://127.0.0.1:9",
            ),
            ("SOUNDTREND__PROVIDERS__ECHOTIK__BREAKER_FAILURES", "2"),
        ],
    )
    .unwrap();
    let lanes = s.provider_lanes();
    let names: Vec<_> = lanes.iter().map(|p| p.name).collect();
    assert_eq!(names, [ProviderKind::EchoTik, ProviderKind::KeyApi]);
    let (echotik, keyapi) = (&lanes[0], &lanes[1]);
    assert_eq!(echotik.burst.get(), 3);
    assert_eq!(echotik.breaker_failures.get(), 2);
    assert_eq!(echotik.credits(), 1);
    assert_eq!(
        echotik.endpoint().as_str(),
        "https://open.echotik.live/",
        "the provider's own public API"
    );
    assert_eq!(keyapi.requests_per_second, 2.0);
    assert_eq!(keyapi.daily_budget(), Some(100));
    assert_eq!(keyapi.credits(), 2);
    assert_eq!(keyapi.endpoint().as_str(), "http://127.0.0.1:9/");
    assert_eq!(s.provider_key(ProviderKind::KeyApi), "providers.keyapi");
}

#[test]
fn without_an_order_the_configured_sections_are_used_keyapi_first() {
    let s = load("[providers.echotik]\n[providers.keyapi]\n", &[]).unwrap();
    let names: Vec<_> = s.provider_lanes().iter().map(|p| p.name).collect();
    assert_eq!(names, [ProviderKind::KeyApi, ProviderKind::EchoTik]);
    let s = load("[providers.echotik]\n", &[]).unwrap();
    let names: Vec<_> = s.provider_lanes().iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [ProviderKind::EchoTik],
        "a provider left out is not used"
    );
}

#[test]
fn the_single_provider_section_keeps_working_unchanged() {
    let s = load("[provider]\nname = \"echotik\"\nburst = 2\n", &[]).unwrap();
    let lanes = s.provider_lanes();
    assert_eq!(lanes.len(), 1);
    assert_eq!(lanes[0].name, ProviderKind::EchoTik);
    assert_eq!(lanes[0].burst.get(), 2);
    assert_eq!(s.provider_key(ProviderKind::EchoTik), "provider");
}

#[test]
fn provider_and_providers_together_are_refused_on_one_line() {
    let e = err("[provider]\nname = \"keyapi\"\n[providers.echotik]\n", &[]);
    assert!(
        e.starts_with("config key `providers`: cannot be used together with [provider]"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let e = err(
        "[providers.echotik]\n",
        &[("SOUNDTREND__PROVIDER__BURST", "2")],
    );
    assert!(e.contains("cannot be used together with [provider]"), "{e}");
}

#[test]
fn bad_values_in_a_providers_section_name_the_full_key() {
    let e = err("[providers.keyapi]\nname = \"echotik\"\n", &[]);
    assert!(
        e.starts_with("config key `providers.keyapi.name`: no such key"),
        "{e}"
    );
    let e = err("[providers.echotik]\nmax_attempts = 0\n", &[]);
    assert!(
        e.starts_with("config key `providers.echotik.max_attempts`"),
        "{e}"
    );
    let e = err(
        "[providers.keyapi]\nbase_url = \"http://example.com\"\n",
        &[],
    );
    assert!(e.contains("providers.keyapi.allow_insecure_http"), "{e}");
    let e = err("[providers.keyapi]\nbogus = 1\n", &[]);
    assert!(
        e.starts_with("config key `providers.keyapi.bogus`: no such key"),
        "{e}"
    );
    let e = err("[providers]\norder = [\"keyapi\", \"keyapi\"]\n", &[]);
    assert!(
        e.starts_with("config key `providers.order`: lists keyapi twice"),
        "{e}"
    );
    let e = err("[providers]\norder = []\n", &[]);
    assert!(
        e.starts_with("config key `providers.order`: names no provider"),
        "{e}"
    );
    let e = err("[providers]\norder = [\"acme\"]\n", &[]);
    assert!(e.starts_with("config key `providers.order"), "{e}");
}
