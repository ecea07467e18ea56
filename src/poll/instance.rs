//! The name this process claims work under (the lease owner).

/// The lease owner of this process: `instance_name` (default hostname-pid) plus a random
/// suffix, so two processes given the same name never release each other's leases.
#[must_use]
pub fn instance_name(configured: &str) -> String {
    let name = if configured.trim().is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "soundtrend".into());
        format!("{host}-{}", std::process::id())
    } else {
        configured.trim().to_owned()
    };
    format!("{name}/{}", &process_tag()[..6])
}

/// Random per process, fixed for its lifetime.
fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}
