//! Waking the worker as soon as work is added, through Postgres `LISTEN`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::scheduler::WATCHLIST_CHANNEL;

/// Wakes the worker when a row is inserted into (or re-enabled in) the watchlist. Only a hint:
/// notifications are lost while disconnected, which the tick covers.
pub(super) async fn listen_for_inserts(pool: PgPool, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut delay = Duration::from_millis(500);
    while !cancel.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if listener.listen(WATCHLIST_CHANNEL).await.is_err() {
            tokio::time::sleep(delay).await;
            continue;
        }
        delay = Duration::from_millis(500);
        // A reconnect may have missed notifications; look for work once.
        wake.notify_one();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(_)) => wake.notify_one(),
                    Ok(None) => { wake.notify_one(); }
                    Err(_) => break,
                }
            }
        }
    }
}
