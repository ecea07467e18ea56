//! Stitching the provider's windows into one series per (clip, region). Pure: no I/O, no clock.
//!
//! The provider's values are relative to their window (the window's maximum is 1, rounded to 2
//! decimals), so a value means nothing outside its window. Every window k gets one unknown
//! log-scale `m_k`; on every day d two windows share, `ln v_kd + m_k` should be the same number
//! (the day's log level). A weighted least-squares fit over all overlaps at once, weights `v²`
//! (a rounded value carries ±0.005, relative ±0.005/v), values under [`FIT_MIN`] left out, finds
//! every `m_k`. The result depends only on the set of windows, never on their arrival order, so a
//! replay rebuilds exactly what live polling wrote.
//!
//! Windows that cannot be linked (no usable overlap, or one made only of zeros and rounding noise)
//! start a new segment; levels are comparable within a segment, never across.

use std::collections::BTreeMap;

/// Half the provider's rounding step: every value is within ±0.005 of the truth.
pub const ROUNDING: f64 = 0.005;
/// Values under this carry more than ±10 % rounding error and are left out of the fit.
pub const FIT_MIN: f64 = 0.05;
/// A single shared day links two windows only when it is all they share and both values are at
/// least this (±2 % or better).
pub const SINGLE_DAY_MIN: f64 = 0.25;
/// Usable shared days (both values ≥ [`FIT_MIN`]) that link two windows.
pub const LINK_DAYS: usize = 2;

/// One successful window as stored in `trend_observations`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub fetch_id: i64,
    /// When it was observed (any monotonic unit, e.g. µs since the epoch): orders "newest".
    pub observed_at: i64,
    /// (day number, provider value), ascending by day, one value per day.
    pub points: Vec<(i32, f64)>,
}

/// One day of the stitched series.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDay {
    pub day: i32,
    /// 0–100; 100 is the highest day of the segment.
    pub index_value: f64,
    /// The band the provider's rounding leaves around `index_value` (same scale).
    pub index_low: f64,
    pub index_high: f64,
    /// 1, 2, … in order of the segment's first window.
    pub segment: i32,
    /// Windows that covered the day.
    pub windows: i32,
    /// The newest window (by `observed_at`, then `fetch_id`) that covered the day.
    pub fetch_id: i64,
}

/// Stitches every window of one (clip, region) into one row per covered day, ascending by day.
#[must_use]
pub fn stitch(input: &[Window]) -> Vec<IndexDay> {
    let mut windows: Vec<&Window> = input.iter().filter(|w| !w.points.is_empty()).collect();
    windows.sort_by_key(|w| (w.points[0].0, w.points[w.points.len() - 1].0, w.fetch_id));
    if windows.is_empty() {
        return Vec::new();
    }
    let mut by_day: BTreeMap<i32, Vec<(usize, f64)>> = BTreeMap::new();
    for (k, w) in windows.iter().enumerate() {
        for &(d, v) in &w.points {
            by_day.entry(d).or_default().push((k, v.max(0.0)));
        }
    }
    let component = components(windows.len(), &by_day);
    let scale = log_scales(windows.len(), &component, &by_day);

    // Each day belongs to the segment of the newest-starting window that covers it.
    let mut days = Vec::with_capacity(by_day.len());
    for (&day, obs) in &by_day {
        let owner = component[obs.iter().map(|&(k, _)| k).max().expect("non-empty")];
        let (mut num, mut den, mut spread) = (0.0, 0.0, 0.0);
        for &(k, v) in obs.iter().filter(|&&(k, _)| component[k] == owner) {
            // Inverse-variance weights: window k's rounding is ±ROUNDING·e^m_k in level units.
            let inv = (-scale[k]).exp();
            num += v * inv;
            den += inv * inv;
            spread += ROUNDING * inv;
        }
        let newest = obs
            .iter()
            .map(|&(k, _)| windows[k])
            .max_by_key(|w| (w.observed_at, w.fetch_id))
            .expect("non-empty");
        days.push(Level {
            day,
            component: owner,
            level: num / den,
            half_band: spread / den,
            windows: obs.len() as i32,
            fetch_id: newest.fetch_id,
        });
    }
    scale_to_segments(&days)
}

#[allow(clippy::struct_field_names)] // a day's level is called `level` in the paper and the docs
struct Level {
    day: i32,
    component: usize,
    level: f64,
    half_band: f64,
    windows: i32,
    fetch_id: i64,
}

/// Per segment: 100 = its highest level; segments numbered by their first window.
fn scale_to_segments(days: &[Level]) -> Vec<IndexDay> {
    let mut max: BTreeMap<usize, f64> = BTreeMap::new();
    for d in days {
        let m = max.entry(d.component).or_insert(0.0);
        *m = m.max(d.level);
    }
    // Components are labelled by their first window in canonical order, so BTreeMap order is
    // segment order.
    let number: BTreeMap<usize, i32> = max.keys().zip(1..).map(|(&c, n)| (c, n)).collect();
    days.iter()
        .map(|d| {
            let top = max[&d.component];
            let rel = |x: f64| {
                if top > 0.0 {
                    round2(100.0 * x / top)
                } else {
                    0.0
                }
            };
            IndexDay {
                day: d.day,
                index_value: rel(d.level),
                index_low: rel((d.level - d.half_band).max(0.0)),
                index_high: rel(d.level + d.half_band),
                segment: number[&d.component],
                windows: d.windows,
                fetch_id: d.fetch_id,
            }
        })
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The component of every window: windows linked by a usable overlap share one. A component is
/// labelled by its first window (canonical order).
fn components(n: usize, by_day: &BTreeMap<i32, Vec<(usize, f64)>>) -> Vec<usize> {
    #[derive(Clone, Copy)]
    struct Overlap {
        shared: usize,
        usable: usize,
        strong: usize,
    }
    let mut shared_days = Vec::new();
    for obs in by_day.values() {
        for (a, &(i, vi)) in obs.iter().enumerate() {
            for &(j, vj) in &obs[a + 1..] {
                shared_days.push((
                    (i.min(j), i.max(j)),
                    Overlap {
                        shared: 1,
                        usable: usize::from(vi >= FIT_MIN && vj >= FIT_MIN),
                        strong: usize::from(vi >= SINGLE_DAY_MIN && vj >= SINGLE_DAY_MIN),
                    },
                ));
            }
        }
    }
    let overlaps = sum_by_pair(n, shared_days, |o, d| {
        o.shared += d.shared;
        o.usable += d.usable;
        o.strong += d.strong;
    });
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &((i, j), o) in &overlaps {
        let linked = o.usable >= LINK_DAYS || (o.shared == 1 && o.strong == 1);
        if linked {
            let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
            // The smaller index is the root, so every component is labelled by its first window.
            let (lo, hi) = (ri.min(rj), ri.max(rj));
            parent[hi] = lo;
        }
    }
    (0..n).map(|k| root(&mut parent, k)).collect()
}

/// The log-scale `m_k` of every window (0 for the first window of each component).
fn log_scales(
    n: usize,
    component: &[usize],
    by_day: &BTreeMap<i32, Vec<(usize, f64)>>,
) -> Vec<f64> {
    // Eliminating the day levels leaves a graph Laplacian in m: for a day with fitted values of
    // windows i, j (weights w), c_ij = w_i·w_j / Σw, and Σ_j c_ij (m_i − m_j) = −Σ_j c_ij (y_i − y_j)
    // with y = ln v.
    let mut couplings = Vec::new();
    let mut rhs = vec![0.0; n];
    for obs in by_day.values() {
        let fit: Vec<(usize, f64, f64)> = obs
            .iter()
            .filter(|&&(_, v)| v >= FIT_MIN)
            .map(|&(k, v)| (k, v * v, v.ln()))
            .collect();
        for (a, &(i, wi, yi)) in fit.iter().enumerate() {
            let total: f64 = fit
                .iter()
                .filter(|&&(k, _, _)| component[k] == component[i])
                .map(|&(_, w, _)| w)
                .sum();
            for &(j, wj, yj) in &fit[a + 1..] {
                if component[j] != component[i] {
                    continue;
                }
                let c = wi * wj / total;
                couplings.push(((i.min(j), i.max(j)), c));
                rhs[i] -= c * (yi - yj);
                rhs[j] -= c * (yj - yi);
            }
        }
    }
    // Gauge: the first window of each component keeps m = 0 (its row becomes the identity).
    let fixed: Vec<bool> = (0..n).map(|k| component[k] == k).collect();
    let coupling = sum_by_pair(n, couplings, |c, d| *c += d);
    let mut laplacian = Envelope::new(n, &coupling, &fixed);
    for (k, b) in rhs.iter_mut().enumerate() {
        if fixed[k] {
            *b = 0.0;
        }
    }
    laplacian.solve(rhs)
}

/// Sums the entries of each pair of windows (i < j), returned in (i, j) order; each pair's
/// entries are added in the order they came (by day), so the fit is repeatable bit for bit.
/// Windows are in canonical order, so window i's partners first appear in increasing j: each
/// row stays sorted by appending, and a binary search finds a partner again. (A map, or a sort
/// of every entry, cost most of the fit; every poll stitches its pair.)
fn sum_by_pair<T: Copy>(
    n: usize,
    entries: Vec<((usize, usize), T)>,
    add: impl Fn(&mut T, T),
) -> Vec<((usize, usize), T)> {
    let mut rows: Vec<Vec<(usize, T)>> = vec![Vec::new(); n];
    for ((i, j), v) in entries {
        let row = &mut rows[i];
        match row.binary_search_by_key(&j, |e| e.0) {
            Ok(p) => add(&mut row[p].1, v),
            Err(p) => row.insert(p, (j, v)),
        }
    }
    rows.into_iter()
        .enumerate()
        .flat_map(|(i, row)| row.into_iter().map(move |(j, v)| ((i, j), v)))
        .collect()
}

/// The reduced Laplacian as a symmetric envelope (skyline) matrix, factorized directly.
///
/// Windows are in canonical order (by first day), and only windows that share a day are coupled,
/// so row i's envelope reaches back only to the earliest window it overlaps: a year of daily
/// 7-day windows is a band 6 wide. Cholesky keeps its fill inside the envelope, so the solve
/// costs the sum of the rows' widths squared: microseconds, where conjugate gradients needed
/// about one iteration per window on such a chain (milliseconds a poll, measured in
/// `docs/benchmarks.md`).
struct Envelope {
    /// Row i holds columns `first[i]..=i` (the lower triangle).
    first: Vec<usize>,
    rows: Vec<Vec<f64>>,
}

impl Envelope {
    /// The Laplacian of `coupling` ((i, j) with i < j) with every fixed row and column replaced
    /// by the identity's: a fixed window's m is 0, so its couplings only add to the free side's
    /// diagonal.
    fn new(n: usize, coupling: &[((usize, usize), f64)], fixed: &[bool]) -> Self {
        let mut first: Vec<usize> = (0..n).collect();
        for &((i, j), _) in coupling {
            if !fixed[i] && !fixed[j] {
                first[j] = first[j].min(i);
            }
        }
        let mut rows: Vec<Vec<f64>> = (0..n).map(|k| vec![0.0; k - first[k] + 1]).collect();
        for k in (0..n).filter(|&k| fixed[k]) {
            rows[k][k - first[k]] = 1.0;
        }
        for &((i, j), c) in coupling {
            for k in [i, j] {
                if !fixed[k] {
                    rows[k][k - first[k]] += c;
                }
            }
            if !fixed[i] && !fixed[j] {
                rows[j][i - first[j]] -= c;
            }
        }
        Envelope { first, rows }
    }

    /// Solves `A·x = b` by Cholesky (A = L·Lᵀ, L overwriting A). The reduced system is positive
    /// definite because every component is connected through positive couplings.
    fn solve(&mut self, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for i in 0..n {
            let fi = self.first[i];
            for j in fi..=i {
                let fj = self.first[j];
                let from = fi.max(fj);
                let mut s = self.rows[i][j - fi];
                for k in from..j {
                    s -= self.rows[i][k - fi] * self.rows[j][k - fj];
                }
                self.rows[i][j - fi] = if j < i {
                    s / self.rows[j][j - fj]
                } else if s > 0.0 {
                    s.sqrt()
                } else {
                    // Only rounding on a degenerate system can get here: keep the result finite.
                    1.0
                };
            }
        }
        // L·y = b, then Lᵀ·x = y, both in place in b.
        for i in 0..n {
            let fi = self.first[i];
            let row = &self.rows[i];
            let s: f64 = (fi..i).map(|k| row[k - fi] * b[k]).sum();
            b[i] = (b[i] - s) / row[i - fi];
        }
        for i in (0..n).rev() {
            let fi = self.first[i];
            let row = &self.rows[i];
            b[i] /= row[i - fi];
            let xi = b[i];
            for k in fi..i {
                b[k] -= row[k - fi] * xi;
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The provider's view of `truth` over days `first..first+len`: divided by the window's max,
    /// rounded to 2 decimals.
    fn window(fetch_id: i64, truth: &dyn Fn(i32) -> f64, first: i32, len: i32) -> Window {
        let max = (first..first + len).map(truth).fold(0.0, f64::max);
        Window {
            fetch_id,
            observed_at: fetch_id,
            points: (first..first + len)
                .map(|d| {
                    let v = if max > 0.0 { truth(d) / max } else { 0.0 };
                    (d, (v * 100.0).round() / 100.0)
                })
                .collect(),
        }
    }

    fn wave(d: i32) -> f64 {
        let x = f64::from(d);
        10.0 + 8.0 * (x / 5.0).sin() + 30.0 * (-((x - 40.0) / 4.0).powi(2)).exp()
    }

    /// Daily 7-day windows over 60 days with a 30-day start.
    fn history(truth: &dyn Fn(i32) -> f64) -> Vec<Window> {
        let mut ws = vec![window(1, truth, 0, 30)];
        for (i, end) in (30..60).enumerate() {
            ws.push(window(2 + i as i64, truth, end - 6, 7));
        }
        ws
    }

    fn worst_error(index: &[IndexDay], truth: &dyn Fn(i32) -> f64) -> f64 {
        let scale = truth(index[0].day) / index[0].index_value;
        index
            .iter()
            .map(|d| (d.index_value * scale - truth(d.day)).abs() / truth(d.day))
            .fold(0.0, f64::max)
    }

    #[test]
    fn overlapping_windows_rebuild_the_true_shape_within_the_rounding() {
        let index = stitch(&history(&wave));
        assert_eq!(index.len(), 60);
        assert!(index.iter().all(|d| d.segment == 1));
        assert!(
            worst_error(&index, &wave) < 0.05,
            "{}",
            worst_error(&index, &wave)
        );
        let top = index
            .iter()
            .max_by(|a, b| a.index_value.total_cmp(&b.index_value));
        assert_eq!(top.unwrap().index_value, 100.0);
        assert_eq!(top.unwrap().day, 40);
    }

    /// Checks `x` against the reduced Laplacian of `coupling`, row by row, computed from the
    /// couplings themselves (not from the envelope): a free row's `Σ c (x_i − x_j)`, a fixed
    /// neighbour's x taken as 0, equals `b_i`; a fixed row's x equals its b.
    fn assert_solves(coupling: &[((usize, usize), f64)], fixed: &[bool], b: &[f64], x: &[f64]) {
        for i in 0..x.len() {
            let residual = if fixed[i] {
                x[i] - b[i]
            } else {
                let x_of = |k: usize| if fixed[k] { 0.0 } else { x[k] };
                coupling
                    .iter()
                    .filter(|&&((p, q), _)| p == i || q == i)
                    .map(|&((p, q), c)| c * (x[i] - x_of(if p == i { q } else { p })))
                    .sum::<f64>()
                    - b[i]
            };
            assert!(residual.abs() < 1e-9, "row {i}: residual {residual}");
        }
    }

    #[test]
    fn the_envelope_factorization_solves_the_reduced_laplacian() {
        // A chain of 60 windows, each coupled to the next three, one long window (1) coupled to
        // the next 25, two components (gauges 0 and 40).
        let n = 60;
        let mut coupling = Vec::new();
        for i in 0..n {
            let reach = if i == 1 { 25 } else { 3 };
            for d in 1..=reach {
                let j = i + d;
                if j < n && (i < 40) == (j < 40) {
                    coupling.push(((i, j), 0.05 + ((i * 7 + d * 3) % 11) as f64 / 10.0));
                }
            }
        }
        let fixed: Vec<bool> = (0..n).map(|k| k == 0 || k == 40).collect();
        let b: Vec<f64> = (0..n)
            .map(|k| {
                if fixed[k] {
                    0.0
                } else {
                    ((k * 13) % 17) as f64 - 8.0
                }
            })
            .collect();
        let x = Envelope::new(n, &coupling, &fixed).solve(b.clone());
        assert_solves(&coupling, &fixed, &b, &x);
        assert_eq!((x[0], x[40]), (0.0, 0.0), "the gauges stay at 0");
    }

    #[test]
    fn the_envelope_solve_holds_when_a_gauge_sits_inside_another_components_envelope() {
        // Interleaved components: the even windows (gauge 0), window 1 alone, the odd windows
        // from 3 (gauge 3). Row 4's envelope (2..=4) holds the fixed row 3.
        let n = 30;
        let mut coupling = Vec::new();
        for i in (0..n).filter(|&i| i != 1) {
            for j in [i + 2, i + 4] {
                if j < n {
                    coupling.push(((i, j), 0.3 + (i % 5) as f64 / 10.0));
                }
            }
        }
        let fixed: Vec<bool> = (0..n).map(|k| k == 0 || k == 1 || k == 3).collect();
        let b: Vec<f64> = (0..n)
            .map(|k| if fixed[k] { 0.0 } else { (k % 7) as f64 - 3.0 })
            .collect();
        let x = Envelope::new(n, &coupling, &fixed).solve(b.clone());
        assert_solves(&coupling, &fixed, &b, &x);
        assert_eq!((x[0], x[1], x[3]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn pair_sums_come_out_in_pair_order_whatever_order_the_entries_came_in() {
        let entries = vec![
            ((2, 5), 1.0),
            ((0, 3), 2.0),
            ((2, 4), 4.0),
            ((0, 3), 8.0),
            ((2, 5), 16.0),
            ((0, 1), 32.0),
        ];
        assert_eq!(
            sum_by_pair(6, entries, |s, v| *s += v),
            vec![
                ((0, 1), 32.0),
                ((0, 3), 10.0),
                ((2, 4), 4.0),
                ((2, 5), 17.0)
            ]
        );
    }

    #[test]
    fn a_daily_window_without_a_new_peak_changes_only_the_last_days_of_a_year() {
        // A pair's first poll (120 days), then a year of daily 7-day windows; the peak (day
        // 200) is long past when the last windows arrive. Each poll re-stitches the whole pair,
        // but what it changes is the tail: the lone poll's index write upserts only those days.
        let truth = |d: i32| {
            let x = f64::from(d);
            50.0 + 30.0 * (x / 23.0).sin()
                + 15.0 * (x / 7.0).cos()
                + 40.0 * (-((x - 200.0) / 9.0).powi(2)).exp()
        };
        let mut ws = vec![window(1, &truth, 0, 120)];
        for (i, end) in (120..485).enumerate() {
            ws.push(window(2 + i as i64, &truth, end - 6, 7));
        }
        for n in [300, 364] {
            let (before, after) = (stitch(&ws[..n]), stitch(&ws[..=n]));
            let last = after.last().unwrap().day;
            let changed: Vec<i32> = after
                .iter()
                .filter(|d| before.iter().find(|b| b.day == d.day) != Some(*d))
                .map(|d| d.day)
                .collect();
            assert!(
                changed.len() <= 14 && changed.iter().all(|&d| d > last - 21),
                "{n} windows: changed days {changed:?} of {}",
                after.len()
            );
        }
    }

    #[test]
    fn the_arrival_order_does_not_change_the_index() {
        let ws = history(&wave);
        let mut reversed = ws.clone();
        reversed.reverse();
        reversed.swap(3, 17);
        assert_eq!(stitch(&ws), stitch(&reversed));
    }

    #[test]
    fn a_window_with_a_new_peak_rescales_earlier_days_but_keeps_their_level() {
        let ws = history(&wave);
        let before = stitch(&ws[..8]);
        let after = stitch(&ws);
        let ratio = |idx: &[IndexDay], a: i32, b: i32| {
            let v = |d: i32| idx.iter().find(|x| x.day == d).unwrap().index_value;
            v(a) / v(b)
        };
        assert!(before.iter().all(|d| d.index_value <= 100.0));
        let (r0, r1) = (ratio(&before, 10, 20), ratio(&after, 10, 20));
        assert!((r0 / r1 - 1.0).abs() < 0.02, "{r0} vs {r1}");
        assert!(
            after.iter().find(|d| d.day == 20).unwrap().index_value
                < before.iter().find(|d| d.day == 20).unwrap().index_value
        );
    }

    #[test]
    fn a_window_that_only_shares_zeros_starts_a_new_segment() {
        let truth = |d: i32| {
            if (20..30).contains(&d) {
                0.0
            } else {
                5.0 + f64::from(d % 7)
            }
        };
        let ws = vec![window(1, &truth, 0, 25), window(2, &truth, 22, 20)];
        let index = stitch(&ws);
        let seg = |d: i32| index.iter().find(|x| x.day == d).unwrap().segment;
        assert_eq!(seg(0), 1);
        assert_eq!(seg(35), 2);
        assert_eq!(index.iter().find(|x| x.day == 25).unwrap().index_value, 0.0);
        assert_eq!(index.len(), 42, "no holes, no duplicates");
    }

    #[test]
    fn one_shared_day_links_only_when_it_is_all_there_is_and_well_above_the_noise() {
        let flat = |_: i32| 1.0;
        let linked = stitch(&[window(1, &flat, 0, 7), window(2, &flat, 6, 7)]);
        assert!(linked.iter().all(|d| d.segment == 1));
        let low = |d: i32| if d == 6 { 0.1 } else { 1.0 };
        let unlinked = stitch(&[window(1, &low, 0, 7), window(2, &low, 6, 7)]);
        assert_eq!(unlinked.last().unwrap().segment, 2);
    }

    #[test]
    fn the_band_is_narrow_where_a_window_shows_the_day_near_its_maximum() {
        let index = stitch(&history(&wave));
        let d40 = index.iter().find(|d| d.day == 40).unwrap();
        assert!(d40.index_low <= d40.index_value && d40.index_value <= d40.index_high);
        assert!(d40.index_high - d40.index_low < 1.5, "{d40:?}");
        assert_eq!(d40.windows, 7);
        assert_eq!(d40.fetch_id, 2 + (46 - 30));
    }
}
