//! `soundtrend demo-server` and the quick start's local API: the shared fake provider
//! ([`crate::provider::fake`]) in its strict mode, answering both dialects for any clip.

use std::net::SocketAddr;

use crate::provider::fake::FakeProvider;

pub use crate::provider::fake::SAMPLE_CLIP_ID;

/// Serves the demo API on `addr` (port 0 picks a free port) and returns the bound address.
/// Any credentials are accepted, but they must come in the provider's scheme.
pub async fn serve(addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (provider, task) = FakeProvider::builder()
        .strict()
        .forget_hits()
        .serve(addr)
        .await?;
    Ok((provider.addr(), task))
}
