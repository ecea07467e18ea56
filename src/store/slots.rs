//! The shared quota in blocks: one transaction takes the quota for several requests at once and
//! reserves each its own consecutive GCRA slot, with the time it may be sent. It keeps every rule
//! of [`super::quota::take`], per request (its lease, its entry's pause) and per block (the
//! provider's pause, breaker and rejected credentials, the day's budget); only the way it gets
//! there differs: the provider's row is locked once per block instead of once per request.
//!
//! Exactness: slot j's send time is the earliest the GCRA allows after slots 0..j-1 (`tat`
//! advances by one emission interval per slot), so sending each request no earlier than its slot
//! keeps the any-second bound (rate + burst) exactly as one request per statement did. A slot is
//! reserved only within [`HORIZON`]; later requests are told to wait, as before. A process that
//! dies holding slots loses them (`tat` has moved on): never reused, never sent twice. Their
//! credits are booked with their `pending` attempt, which becomes `abandoned` as any other.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Connection, PgConnection};

use super::quota::{Attempt, Grant, QuotaParams};

/// How far ahead a block reserves slots: what the rate allows in this long (and the burst).
pub const HORIZON: Duration = Duration::from_millis(100);

/// What the block's transaction read, under the provider's row lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shared {
    pub now: DateTime<Utc>,
    pub tat: DateTime<Utc>,
    pub paused_until: DateTime<Utc>,
    pub open_until: Option<DateTime<Utc>>,
    pub probe_until: Option<DateTime<Utc>>,
    /// The credentials were rejected (for the key the requests carry).
    pub auth_failed: bool,
    pub credits_used: i64,
}

/// One request as the block sees it: whether its lease is still ours and its entry enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub lease_ok: bool,
    pub enabled: bool,
}

/// What the block decides: per request its grant (a granted one without its fetch id yet, and
/// the wait before its slot), the provider's new `tat` and whether a probe was granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub grants: Vec<Planned>,
    pub tat: DateTime<Utc>,
    pub probe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Planned {
    /// Reserved: send after this long.
    Slot(Duration),
    Other(Grant),
}

impl Plan {
    #[must_use]
    pub fn granted(&self) -> usize {
        self.grants
            .iter()
            .filter(|g| matches!(g, Planned::Slot(_)))
            .count()
    }
}

/// The block's decision, pure: the same rules as [`super::quota::take`] applied to each request
/// in turn, each granted one taking the next slot.
#[must_use]
pub fn plan(p: &QuotaParams, s: &Shared, requests: &[Standing], probe_rest: Duration) -> Plan {
    let t = chrono::Duration::from_std(p.emission_interval).unwrap_or(chrono::Duration::MAX);
    let tolerance = t * i32::try_from(p.burst).unwrap_or(i32::MAX);
    let horizon = chrono::Duration::from_std(HORIZON).unwrap_or_default();
    let breaker_ok = s
        .open_until
        .is_none_or(|open| open <= s.now && s.probe_until.is_none_or(|probe| probe <= s.now));
    let probing = s.open_until.is_some();
    let down_for = [s.open_until, s.probe_until]
        .into_iter()
        .flatten()
        .max()
        .map_or(Duration::ZERO, |until| wait(until - s.now));
    let mut tat = s.tat.max(s.now);
    let mut used = s.credits_used;
    let credits = i64::from(p.credits_per_request);
    let mut probe = false;
    let grants = requests
        .iter()
        .map(|r| {
            if !r.lease_ok {
                return Planned::Other(Grant::LeaseLost);
            }
            if !r.enabled {
                return Planned::Other(Grant::EntryPaused);
            }
            if s.auth_failed {
                return Planned::Other(Grant::AuthFailed);
            }
            if !breaker_ok || (probing && probe) {
                // One probe at a time: the one this block granted is in flight.
                let rest = if probe { probe_rest } else { down_for };
                return Planned::Other(Grant::Down(rest.max(Duration::from_millis(1))));
            }
            let send_at = (tat + t - tolerance).max(s.now);
            if s.paused_until > s.now || send_at - s.now > horizon {
                let until = s.paused_until.max(tat + t - tolerance);
                return Planned::Other(Grant::Wait(
                    wait(until - s.now).max(Duration::from_millis(1)),
                ));
            }
            if p.daily_budget
                .is_some_and(|b| used + credits > i64::from(b))
            {
                return Planned::Other(Grant::BudgetExhausted {
                    used,
                    budget: i64::from(p.daily_budget.unwrap_or(0)),
                });
            }
            used += credits;
            tat += t;
            probe |= probing;
            Planned::Slot(wait(send_at - s.now))
        })
        .collect();
    Plan { grants, tat, probe }
}

fn wait(d: chrono::Duration) -> Duration {
    d.to_std()
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_hours(1))
}

/// Takes the quota for `requests` (all of one provider, carrying the same credentials) in one
/// transaction. Returns each request's grant and, for a granted one, the wait before its slot.
pub async fn take_block(
    conn: &mut PgConnection,
    p: &QuotaParams,
    day: NaiveDate,
    requests: &[Attempt<'_>],
    key: &str,
) -> Result<Vec<(Grant, Duration)>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let Some(q) = sqlx::query!(
        r#"SELECT tat, paused_until, open_until, probe_until,
                  (auth_failed_at IS NOT NULL AND auth_key IS NOT DISTINCT FROM $2) AS "auth_failed!",
                  clock_timestamp() AS "now!"
           FROM provider_quota WHERE provider = $1 FOR UPDATE"#,
        p.provider.as_str(),
        key,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        // The provider row is missing (a fresh database that skipped ensure_provider).
        return Ok(vec![
            (Grant::Wait(Duration::from_millis(100)), Duration::ZERO);
            requests.len()
        ]);
    };
    let clips: Vec<&str> = requests.iter().map(|a| a.clip_id).collect();
    let regions: Vec<&str> = requests.iter().map(|a| a.region).collect();
    let leases: Vec<Option<uuid::Uuid>> = requests.iter().map(|a| a.lease).collect();
    // Under the provider's lock every booking of its credits waits for us: the ledger read here
    // (a statement after the lock, so it sees every booking before) is the one the block books
    // on. Leases are locked in key order (claims skip locked rows).
    let r = sqlx::query!(
        r#"WITH held AS (
             SELECT w.lease_token, w.enabled FROM watchlist w
             JOIN UNNEST($1::text[], $2::text[], $3::uuid[]) AS u(clip_id, region, lease)
               ON w.clip_id = u.clip_id AND w.region = u.region AND w.lease_token = u.lease
             ORDER BY w.clip_id, w.region
             FOR UPDATE OF w
           )
           SELECT COALESCE((SELECT credits_used FROM credit_usage
                            WHERE provider = $4 AND day = $5), 0)::int8 AS "used!",
                  COALESCE(h.leases, '{}') AS "leases!: Vec<uuid::Uuid>",
                  COALESCE(h.enabled, '{}') AS "enabled!: Vec<bool>"
           FROM (SELECT array_agg(lease_token) AS leases, array_agg(enabled) AS enabled
                 FROM held) h"#,
        &clips as _,
        &regions as _,
        &leases as _,
        p.provider.as_str(),
        day,
    )
    .fetch_one(&mut *tx)
    .await?;
    // Lease tokens are unique per claim: a held token is the request's entry, still ours.
    let held: std::collections::HashMap<uuid::Uuid, bool> =
        r.leases.into_iter().zip(r.enabled).collect();
    let standings: Vec<Standing> = requests
        .iter()
        .map(|a| match a.lease {
            None => Standing {
                lease_ok: true,
                enabled: true,
            },
            Some(lease) => Standing {
                lease_ok: held.contains_key(&lease),
                enabled: held.get(&lease).copied().unwrap_or(true),
            },
        })
        .collect();
    let shared = Shared {
        now: q.now,
        tat: q.tat,
        paused_until: q.paused_until,
        open_until: q.open_until,
        probe_until: q.probe_until,
        auth_failed: q.auth_failed,
        credits_used: r.used,
    };
    let plan = plan(p, &shared, &standings, requests[0].lease_ttl);
    let n = plan.granted();
    if n == 0 {
        tx.commit().await?;
        return Ok(plan
            .grants
            .iter()
            .map(|g| match g {
                Planned::Other(g) => (*g, Duration::ZERO),
                Planned::Slot(_) => unreachable!("none granted"),
            })
            .collect());
    }
    let granted: Vec<(&Attempt<'_>, Duration)> = requests
        .iter()
        .zip(&plan.grants)
        .filter_map(|(a, g)| match g {
            Planned::Slot(w) => Some((a, *w)),
            Planned::Other(_) => None,
        })
        .collect();
    let lease_ttl = requests[0].lease_ttl.as_secs_f64();
    let booked = sqlx::query!(
        r#"WITH g AS (
             SELECT u.*, nextval(pg_get_serial_sequence('fetches', 'id')) AS id
             FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::int2[], $5::int2[], $6::float8[])
                  WITH ORDINALITY AS u(clip_id, region, lease, period, attempt, wait_s, n)
           ),
           pending AS (
             -- Booked credits and their archived attempts are one transaction.
             INSERT INTO fetches (id, clip_id, region, period, provider, requested_at, duration_ms,
                                  outcome, attempt, credits)
             OVERRIDING SYSTEM VALUE
             SELECT g.id, g.clip_id, g.region, g.period, $7, $8::timestamptz + make_interval(secs => g.wait_s),
                    0, 'pending', g.attempt, $9
             FROM g
             RETURNING 1
           ),
           leases AS (
             -- Each request about to be sent, and its write, fit in its extended lease.
             UPDATE watchlist w SET
                 lease_expires_at = GREATEST(w.lease_expires_at, now() + make_interval(secs => $10 + g.wait_s)),
                 next_due_at = GREATEST(w.next_due_at, now() + make_interval(secs => $10 + g.wait_s))
             FROM g
             WHERE w.clip_id = g.clip_id AND w.region = g.region AND w.lease_token = g.lease
             RETURNING 1
           ),
           q AS (
             UPDATE provider_quota SET tat = $11,
                 probe_until = CASE WHEN $12 THEN $8::timestamptz + make_interval(secs => $10)
                                    ELSE probe_until END
             WHERE provider = $7
             RETURNING 1
           ),
           c AS (
             INSERT INTO credit_usage AS cu (provider, day, credits_used, requests, budget)
             VALUES ($7, $13, $9::int4 * $14::int4, $14::int4, $15)
             ON CONFLICT (provider, day) DO UPDATE SET
                 credits_used = cu.credits_used + EXCLUDED.credits_used,
                 requests = cu.requests + EXCLUDED.requests,
                 budget = EXCLUDED.budget
             RETURNING credits_used
           )
           SELECT ARRAY(SELECT id FROM g ORDER BY n) AS "ids!",
                  (SELECT credits_used FROM c)::int8 AS "used!""#,
        &granted.iter().map(|g| g.0.clip_id).collect::<Vec<_>>() as _,
        &granted.iter().map(|g| g.0.region).collect::<Vec<_>>() as _,
        &granted.iter().map(|g| g.0.lease).collect::<Vec<_>>() as _,
        &granted.iter().map(|g| g.0.period).collect::<Vec<_>>(),
        &granted.iter().map(|g| g.0.attempt).collect::<Vec<_>>(),
        &granted
            .iter()
            .map(|g| g.1.as_secs_f64())
            .collect::<Vec<_>>(),
        p.provider.as_str(),
        q.now,
        i16::try_from(p.credits_per_request).unwrap_or(i16::MAX),
        lease_ttl,
        plan.tat,
        plan.probe,
        day,
        i32::try_from(n).unwrap_or(i32::MAX),
        p.daily_budget.map(|b| i32::try_from(b).unwrap_or(i32::MAX)),
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut ids = booked.ids.into_iter();
    Ok(plan
        .grants
        .iter()
        .map(|g| match g {
            Planned::Slot(w) => (
                Grant::Granted {
                    credits_used_today: booked.used,
                    fetch_id: ids.next().unwrap_or_default(),
                },
                *w,
            ),
            Planned::Other(g) => (*g, Duration::ZERO),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderKind;

    fn params(rate: f64, burst: u32, budget: Option<u32>) -> QuotaParams {
        QuotaParams {
            provider: ProviderKind::KeyApi,
            emission_interval: Duration::from_secs_f64(1.0 / rate),
            burst,
            credits_per_request: 2,
            daily_budget: budget,
        }
    }

    fn shared(now: DateTime<Utc>) -> Shared {
        Shared {
            now,
            tat: now - chrono::Duration::hours(1),
            paused_until: now - chrono::Duration::hours(1),
            open_until: None,
            probe_until: None,
            auth_failed: false,
            credits_used: 0,
        }
    }

    const TTL: Duration = Duration::from_mins(1);

    const OK: Standing = Standing {
        lease_ok: true,
        enabled: true,
    };

    #[test]
    fn slots_follow_the_gcra_one_interval_apart_after_the_burst() {
        let now = Utc::now();
        // 50/s, burst 2: two now, then one every 20 ms up to the 100 ms horizon.
        let plan = plan(&params(50.0, 2, None), &shared(now), &[OK; 9], TTL);
        let waits: Vec<Option<u128>> = plan
            .grants
            .iter()
            .map(|g| match g {
                Planned::Slot(w) => Some(w.as_millis()),
                Planned::Other(_) => None,
            })
            .collect();
        assert_eq!(
            waits,
            [
                Some(0),
                Some(0),
                Some(20),
                Some(40),
                Some(60),
                Some(80),
                Some(100),
                None,
                None
            ]
        );
        assert!(matches!(plan.grants[7], Planned::Other(Grant::Wait(d)) if d.as_millis() == 120));
        assert_eq!(plan.tat, now + chrono::Duration::milliseconds(7 * 20));
    }

    #[test]
    fn the_block_keeps_every_rule_of_the_single_take() {
        let now = Utc::now();
        let p = params(1000.0, 10, Some(5));
        let mut s = shared(now);
        s.credits_used = 2;
        let lost = Standing {
            lease_ok: false,
            enabled: true,
        };
        let paused = Standing {
            lease_ok: true,
            enabled: false,
        };
        let block = plan(&p, &s, &[lost, OK, paused, OK], TTL);
        assert_eq!(block.grants[0], Planned::Other(Grant::LeaseLost));
        assert_eq!(block.grants[1], Planned::Slot(Duration::ZERO));
        assert_eq!(block.grants[2], Planned::Other(Grant::EntryPaused));
        assert_eq!(
            block.grants[3],
            Planned::Other(Grant::BudgetExhausted { used: 4, budget: 5 }),
            "2 used + 2 granted: the next 2 would pass the budget of 5"
        );

        let mut s = shared(now);
        s.open_until = Some(now - chrono::Duration::seconds(1));
        let probe = plan(&p, &s, &[OK, OK], TTL);
        assert_eq!(probe.grants[0], Planned::Slot(Duration::ZERO));
        assert_eq!(
            probe.grants[1],
            Planned::Other(Grant::Down(TTL)),
            "one probe"
        );
        assert!(probe.probe);

        let mut s = shared(now);
        s.auth_failed = true;
        assert_eq!(
            plan(&p, &s, &[OK], TTL).grants[0],
            Planned::Other(Grant::AuthFailed)
        );

        let mut s = shared(now);
        s.paused_until = now + chrono::Duration::seconds(3);
        assert!(matches!(plan(&p, &s, &[OK], TTL).grants[0],
            Planned::Other(Grant::Wait(d)) if d.as_secs() == 3));
    }
}
