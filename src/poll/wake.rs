//! Waking the worker as soon as work is added, through Postgres `LISTEN`.

use std::sync::Arc;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backoff::LISTEN_RECONNECT;
use super::scheduler::WATCHLIST_CHANNEL;

/// Wakes the worker when a row is inserted into (or re-enabled in) the watchlist. Only a hint:
/// notifications are lost while disconnected, which the tick covers.
pub(super) async fn listen_for_inserts(pool: PgPool, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut delays = LISTEN_RECONNECT.delays();
    while !cancel.is_cancelled() {
        // Connecting and `LISTEN` fail alike (the database is down or refusing us): both wait
        // longer each time, until a `LISTEN` succeeds.
        let listener = match PgListener::connect_with(&pool).await {
            Ok(mut l) => l.listen(WATCHLIST_CHANNEL).await.map(|()| l),
            Err(e) => Err(e),
        };
        let Ok(mut listener) = listener else {
            let delay = delays.next().expect("backoff delays never end");
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => continue,
            }
        };
        delays = LISTEN_RECONNECT.delays();
        // A reconnect may have missed notifications; look for work once.
        wake.notify_one();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(_)) => wake.notify_one(),
                    Ok(None) => { wake.notify_one(); }
                    Err(_) => break,
                }
            }
        }
    }
}
