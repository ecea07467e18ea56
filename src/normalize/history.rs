//! What a pair's `trend_index` looks like after a run of polls, each of which re-stitched the
//! pair from the windows up to its own fetch and stamped the rows it changed: the pure core of
//! `soundtrend replay`'s one-pass index rebuild. Replaying fetch by fetch against the database
//! gave the same rows (values and `changed_by`) at one statement per fetch; this gives them at
//! one stitch per fetch in memory, and the store writes only what differs from what is stored.

use std::collections::BTreeMap;

use super::stitch::{stitch, IndexDay, Window};

/// One stored `trend_index` row: the day and the fetch that last changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct StampedDay {
    pub day: IndexDay,
    pub changed_by: i64,
}

/// One stored `trend_pairs` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairRange {
    pub first_day: i32,
    pub last_day: i32,
    pub segments: i32,
    pub changed_by: i64,
}

/// A pair's stored index: its days (by day number) and its `trend_pairs` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairIndex {
    pub days: BTreeMap<i32, StampedDay>,
    pub range: Option<PairRange>,
}

impl PairIndex {
    /// Re-stitches after each of `steps` (fetch ids, ascending) in turn, as each poll did: the
    /// index becomes the stitch of the windows with `fetch_id <= step`, and every row that
    /// differs from before is stamped with the step. `windows` is every window of the pair.
    #[must_use]
    pub fn after_steps(mut self, windows: &[Window], steps: &[i64]) -> Self {
        let mut sorted: Vec<&Window> = windows.iter().collect();
        sorted.sort_by_key(|w| w.fetch_id);
        let mut last_prefix = None;
        for &step in steps {
            let prefix = sorted.partition_point(|w| w.fetch_id <= step);
            if last_prefix == Some(prefix) {
                // The same windows stitch the same: nothing changes at this step.
                continue;
            }
            last_prefix = Some(prefix);
            let owned: Vec<Window> = sorted[..prefix].iter().map(|w| (*w).clone()).collect();
            self = self.stitched(&stitch(&owned), step);
        }
        self
    }

    /// Re-stitches as live polls do when `written` (fetch ids, in commit order) are stored one
    /// after another: each stitches every window stored by then (the pair's other windows, then
    /// the written ones up to it), and every row that differs is stamped with it. Unlike
    /// [`Self::after_steps`], a window with a higher id stored earlier counts, as it did live.
    #[must_use]
    pub fn after_writes(mut self, windows: &[Window], written: &[i64]) -> Self {
        let mut stored: Vec<Window> = windows
            .iter()
            .filter(|w| !written.contains(&w.fetch_id))
            .cloned()
            .collect();
        for &id in written {
            stored.extend(windows.iter().find(|w| w.fetch_id == id).cloned());
            self = self.stitched(&stitch(&stored), id);
        }
        self
    }

    /// The index after one poll that stitched `days`, stamped `changed_by` where it differs.
    fn stitched(mut self, days: &[IndexDay], changed_by: i64) -> Self {
        let mut next = BTreeMap::new();
        for d in days {
            let kept = self
                .days
                .remove(&d.day)
                .filter(|old| old.day == *d)
                .map_or(changed_by, |old| old.changed_by);
            next.insert(
                d.day,
                StampedDay {
                    day: d.clone(),
                    changed_by: kept,
                },
            );
        }
        let range = match (days.first(), days.last()) {
            (Some(first), Some(last)) => {
                let segments = days.iter().map(|d| d.segment).max().unwrap_or(1);
                let same = self.range.filter(|r| {
                    (r.first_day, r.last_day, r.segments) == (first.day, last.day, segments)
                });
                Some(same.unwrap_or(PairRange {
                    first_day: first.day,
                    last_day: last.day,
                    segments,
                    changed_by,
                }))
            }
            _ => None,
        };
        Self { days: next, range }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(fetch_id: i64, first: i32, values: &[f64]) -> Window {
        Window {
            fetch_id,
            observed_at: fetch_id,
            points: (first..).zip(values.iter().copied()).collect(),
        }
    }

    /// What writing the stitch after every step did, one step at a time (the old replay).
    fn step_by_step(windows: &[Window], steps: &[i64]) -> PairIndex {
        steps.iter().fold(PairIndex::default(), |index, &step| {
            let upto: Vec<Window> = windows
                .iter()
                .filter(|w| w.fetch_id <= step)
                .cloned()
                .collect();
            index.stitched(&stitch(&upto), step)
        })
    }

    #[test]
    fn replaying_every_step_at_once_equals_writing_each_step() {
        let windows = vec![
            window(1, 0, &[0.2, 0.5, 1.0, 0.4, 0.3, 0.2, 0.1]),
            window(2, 1, &[0.5, 1.0, 0.4, 0.3, 0.2, 0.1, 0.1]),
            window(4, 2, &[0.4, 0.2, 0.15, 0.1, 0.1, 0.2, 1.0]),
            window(5, 30, &[1.0, 0.5]),
        ];
        let steps = [1, 2, 3, 4, 5];
        let once = PairIndex::default().after_steps(&windows, &steps);
        assert_eq!(once, step_by_step(&windows, &steps));
        assert_eq!(once.range.unwrap().segments, 2, "day 30 cannot be linked");
        assert_eq!(once.range.unwrap().changed_by, 5);
    }

    #[test]
    fn writes_stitch_every_window_stored_by_then_whatever_its_id() {
        let windows = vec![
            window(1, 0, &[0.2, 0.5, 1.0, 0.4, 0.3, 0.2, 0.1]),
            window(3, 1, &[0.5, 1.0, 0.4, 0.3, 0.2, 0.1, 0.1]),
            window(2, 2, &[0.4, 0.2, 0.15, 0.1, 0.1, 0.2, 1.0]),
        ];
        // Fetch 3 committed before fetch 2: 2's stitch already saw 3.
        let live = PairIndex::default()
            .stitched(&stitch(&windows[..1]), 1)
            .stitched(&stitch(&windows[..2]), 3)
            .stitched(&stitch(&windows), 2);
        let base = PairIndex::default().stitched(&stitch(&windows[..1]), 1);
        assert_eq!(base.clone().after_writes(&windows, &[3, 2]), live);
        assert_eq!(
            base.after_writes(&windows, &[3, 2])
                .range
                .unwrap()
                .changed_by,
            2
        );
    }

    #[test]
    fn unchanged_rows_keep_who_changed_them_and_dropped_windows_drop_their_days() {
        let windows = vec![window(1, 0, &[1.0, 0.5]), window(2, 5, &[1.0])];
        let live = PairIndex::default().after_steps(&windows, &[1, 2]);
        assert_eq!(live.days[&0].changed_by, 1);
        assert_eq!(live.days[&5].changed_by, 2);

        // Fetch 2 is replayed and no longer valid: its window is gone, its day with it.
        let replayed = live.clone().after_steps(&windows[..1], &[2]);
        assert_eq!(replayed.days.len(), 2);
        assert_eq!(
            replayed.days[&0].changed_by, 1,
            "untouched rows keep their stamp"
        );
        assert_eq!(replayed.range.unwrap().last_day, 1);
        assert_eq!(replayed.range.unwrap().changed_by, 2);

        // Replaying what is already stored changes nothing.
        assert_eq!(live.clone().after_steps(&windows, &[1, 2]), live);
        assert_eq!(
            PairIndex::default().after_steps(&[], &[7]),
            PairIndex::default()
        );
    }
}
