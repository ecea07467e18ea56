//! The pictures: an overview of the watchlist and one page per sound, rendered from the database
//! on each call. `soundtrend report` writes them into one self-contained HTML file; `soundtrend
//! run` serves them live on the admin listener (`/`, `/sounds/{clip_id}`).
//!
//! Data is read here ([`Overview::load`], [`SoundPage::load`]), drawn in [`chart`] and laid out
//! in [`html`]. Provider text (titles, authors, audience names) is only ever interpolated by the
//! template engine, which escapes it.

pub mod chart;
pub mod html;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::domain::{ClipId, Region};
use crate::store::health::{self, Snapshot};
use crate::store::pages::{self, CreditsDay, Rising, SoundMeta};
use crate::store::report::{self, EntryCounts};
use crate::store::sound::{self, AudienceEntry};

/// What a page shows: the whole watchlist or a part of it.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub clip_id: Option<ClipId>,
    pub region: Option<Region>,
    /// Only history from this day on.
    pub since: Option<NaiveDate>,
}

impl Filter {
    #[must_use]
    pub fn clip(&self) -> Option<&str> {
        self.clip_id.as_ref().map(ClipId::as_str)
    }

    #[must_use]
    pub fn region(&self) -> Option<&str> {
        self.region.as_ref().map(Region::as_str)
    }
}

/// The overview: what is rising, what polling costs, how healthy it is.
#[derive(Debug)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub rising: Vec<Rising>,
    pub credits: Vec<CreditsDay>,
    pub entries: EntryCounts,
    pub providers: Vec<Snapshot>,
}

impl Overview {
    pub async fn load(pool: &PgPool, filter: &Filter, now: DateTime<Utc>) -> sqlx::Result<Self> {
        let month_ago = now.date_naive() - chrono::Duration::days(30);
        Ok(Self {
            generated_at: now,
            rising: pages::rising(pool, filter.clip(), filter.region(), filter.since, 50).await?,
            credits: pages::credits_per_day(pool, filter.since.unwrap_or(month_ago)).await?,
            entries: report::entry_counts(pool).await?,
            providers: health::snapshot(pool, now.date_naive()).await?,
        })
    }
}

/// One region of a sound: its stitched series, rank history and newest audience.
#[derive(Debug, Clone)]
pub struct RegionView {
    pub region: Region,
    /// (day, index 0–100), oldest first, newest segment only when the series has several.
    pub index: Vec<(NaiveDate, f64)>,
    /// Segments in the shown range (levels compare within one only).
    pub segments: usize,
    pub ranks: Vec<(NaiveDate, f64)>,
    pub countries: Vec<Change>,
    pub interests: Vec<Change>,
    /// Where the newest data came from.
    pub fetch_id: i64,
    pub provider: String,
    pub fetched_at: DateTime<Utc>,
}

/// An audience entry with its score change since the snapshot before (None: it is new there).
#[derive(Debug, Clone)]
pub struct Change {
    pub name: String,
    pub score: Option<f64>,
    pub delta: Option<f64>,
    pub new: bool,
}

/// One sound's page.
#[derive(Debug, Clone)]
pub struct SoundPage {
    pub clip_id: ClipId,
    pub meta: Option<SoundMeta>,
    pub regions: Vec<RegionView>,
}

impl SoundPage {
    /// None when the clip has never been polled successfully.
    pub async fn load(
        pool: &PgPool,
        clip_id: &ClipId,
        filter: &Filter,
    ) -> sqlx::Result<Option<Self>> {
        let clip = clip_id.as_str();
        let latest = pages::latest_fetches(pool, clip, filter.region()).await?;
        if latest.is_empty() {
            return Ok(None);
        }
        let mut index: BTreeMap<String, Vec<sound::Day>> = BTreeMap::new();
        for d in sound::daily(pool, clip, filter.region(), None).await? {
            if filter.since.is_none_or(|s| d.day >= s) {
                index.entry(d.region.clone()).or_default().push(d);
            }
        }
        let mut ranks: BTreeMap<String, Vec<(NaiveDate, f64)>> = BTreeMap::new();
        for r in pages::rank_history(pool, clip, filter.region(), filter.since).await? {
            ranks
                .entry(r.region.to_string())
                .or_default()
                .push((r.observed_at.date_naive(), f64::from(r.rank)));
        }
        let mut regions = Vec::new();
        for f in latest {
            let days = index.remove(f.region.as_str()).unwrap_or_default();
            let segments = days
                .iter()
                .map(|d| d.segment)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let newest_segment = days.last().map(|d| d.segment);
            let (countries_before, interests_before) = match f.previous {
                Some(p) => (
                    sound::countries(pool, p, 50).await?,
                    sound::interests(pool, p, 50).await?,
                ),
                None => (Vec::new(), Vec::new()),
            };
            let had_before = f.previous.is_some();
            let countries = changes(
                sound::countries(pool, f.newest, 10).await?,
                &countries_before,
                had_before,
            );
            let interests = changes(
                sound::interests(pool, f.newest, 10).await?,
                &interests_before,
                had_before,
            );
            regions.push(RegionView {
                index: days
                    .iter()
                    .filter(|d| Some(d.segment) == newest_segment)
                    .map(|d| (d.day, d.index_value))
                    .collect(),
                segments,
                ranks: ranks.remove(f.region.as_str()).unwrap_or_default(),
                countries,
                interests,
                fetch_id: f.newest,
                provider: f.provider,
                fetched_at: f.requested_at,
                region: f.region,
            });
        }
        Ok(Some(Self {
            clip_id: clip_id.clone(),
            meta: pages::sound_meta(pool, clip).await?,
            regions,
        }))
    }
}

/// The newest list against the one before: each entry's score change, or new.
fn changes(newest: Vec<AudienceEntry>, before: &[AudienceEntry], had_before: bool) -> Vec<Change> {
    let key = |e: &AudienceEntry| e.code.clone().or_else(|| e.name.clone());
    newest
        .into_iter()
        .map(|e| {
            let then = before.iter().find(|b| key(b) == key(&e));
            Change {
                name: e
                    .name
                    .clone()
                    .or_else(|| e.code.clone())
                    .unwrap_or_default(),
                delta: then.and_then(|t| Some(e.score? - t.score?)),
                new: had_before && then.is_none(),
                score: e.score,
            }
        })
        .collect()
}
