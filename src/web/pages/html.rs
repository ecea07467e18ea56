//! The pages' HTML, through `maud`: every interpolated value is escaped, so provider text can
//! only ever be text. Self-contained: inline CSS and SVG, no script, no request to anywhere.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::chart::{css_color, line_chart, Series, YAxis};
use super::{Change, Overview, RegionView, SoundPage};

/// How pages link to a sound: within one file (`#sound-…`) or to its live page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Anchors,
    Pages,
}

impl Links {
    fn to(self, clip_id: &str) -> String {
        match self {
            Self::Anchors => format!("#sound-{clip_id}"),
            Self::Pages => format!("/sounds/{clip_id}"),
        }
    }
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#1b1b1b}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:28px 0 4px;border-top:1px solid #ddd;padding-top:16px}
h3{font-size:15px;margin:16px 0 4px}.muted{color:#666}.small{font-size:12px}
table{border-collapse:collapse;margin:6px 0 12px}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{font-weight:600;border-bottom:1px solid #ccc}td.num,th.num{text-align:right}
.up{color:#08783e}.down{color:#b3261e}.legend span{display:inline-block;margin-right:14px}
.swatch{display:inline-block;width:12px;height:3px;vertical-align:middle;margin-right:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:0 24px}
.title{overflow-wrap:anywhere;word-break:break-word}.state-down,.state-auth_failed,.state-budget_spent{color:#b3261e;font-weight:600}
svg.chart{max-width:100%;height:auto;display:block}.empty{color:#666;font-style:italic}
";

fn page(title: &str, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                // No icon to fetch: browsers otherwise ask for /favicon.ico.
                link rel="icon" href="data:,";
                style { (PreEscaped(CSS)) }
            }
            body { (body) }
        }
    }
}

/// The report: the overview, then every sound in one file.
#[must_use]
pub fn report(overview: &Overview, sounds: &[SoundPage]) -> Markup {
    let body = html! {
        (overview_body(overview, Links::Anchors))
        @for s in sounds { (sound_body(s)) }
    };
    page("soundtrend report", &body)
}

/// The live overview page.
#[must_use]
pub fn overview_page(overview: &Overview) -> Markup {
    page("soundtrend", &overview_body(overview, Links::Pages))
}

/// The live page of one sound.
#[must_use]
pub fn sound_page(sound: &SoundPage) -> Markup {
    let title = sound
        .meta
        .as_ref()
        .and_then(|m| m.title.clone())
        .unwrap_or_else(|| sound.clip_id.to_string());
    let body = html! {
        p.small { a href="/" { "← overview" } }
        (sound_body(sound))
    };
    page(&format!("{title} · soundtrend"), &body)
}

fn overview_body(o: &Overview, links: Links) -> Markup {
    let e = &o.entries;
    html! {
        h1 { "soundtrend" }
        p.muted.small { "Generated " (o.generated_at.format("%Y-%m-%d %H:%M UTC")) " from the database." }
        h2 { "Rising" }
        @if o.rising.is_empty() {
            p.empty { "No stitched history yet: poll some sounds first." }
        } @else {
            table {
                tr { th { "sound" } th { "region" } th { "stage" } th.num { "index" } th.num { "7-day growth" } th.num { "rank" } th.num { "rank change (7 d)" } th { "as of" } }
                @for r in &o.rising {
                    tr {
                        td.title {
                            a href=(links.to(r.clip_id.as_str())) { (r.title.as_deref().unwrap_or(r.clip_id.as_str())) }
                            @if let Some(a) = &r.author { br; span.muted.small { (a) } }
                        }
                        td { (r.region) }
                        td { (r.stage) }
                        td.num { (format!("{:.0}", r.index_value)) }
                        td.num { (signed_pct(r.growth_7d)) }
                        td.num { (opt(r.rank)) }
                        td.num { (signed(r.rank_change_7d)) }
                        td { (r.day) }
                    }
                }
            }
        }
        h2 { "Credits spent per day" }
        (credits_chart(o))
        h2 { "Polling health" }
        table {
            tr { th.num { "watched" } th.num { "enabled" } th.num { "due now" } th.num { "overdue (> 1 h)" } th.num { "polling now" } th.num { "disabled" } }
            tr { td.num { (e.total) } td.num { (e.enabled) } td.num { (e.due_now) } td.num { (e.overdue) } td.num { (e.leased) } td.num { (e.disabled) } }
        }
        table {
            tr { th { "provider" } th { "state" } th.num { "failures in a row" } th { "last failure" } }
            @for p in &o.providers {
                @let state = p.state(None);
                tr {
                    td { (p.provider) }
                    td class={"state-" (state.as_str())} { (state) }
                    td.num { (p.consecutive_failures) }
                    td { (p.open_until.map(|t| format!("down until {}", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default()) }
                }
            }
        }
    }
}

fn credits_chart(o: &Overview) -> Markup {
    let mut providers: Vec<&str> = o.credits.iter().map(|c| c.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    let lines: Vec<Vec<(chrono::NaiveDate, f64)>> = providers
        .iter()
        .map(|p| {
            o.credits
                .iter()
                .filter(|c| c.provider == *p)
                .map(|c| (c.day, f64::from(c.credits_used)))
                .collect()
        })
        .collect();
    let max = o.credits.iter().map(|c| c.credits_used).max().unwrap_or(0);
    let series: Vec<Series<'_>> = lines.iter().map(|l| Series { points: l }).collect();
    html! {
        (legend(&providers))
        (line_chart("Credits spent per UTC day, per provider", &series, &YAxis::up_to(f64::from(max))))
    }
}

fn sound_body(s: &SoundPage) -> Markup {
    let meta = s.meta.as_ref();
    let title = meta
        .and_then(|m| m.title.as_deref())
        .unwrap_or(s.clip_id.as_str());
    let regions: Vec<&str> = s.regions.iter().map(|r| r.region.as_str()).collect();
    let index: Vec<Series<'_>> = s
        .regions
        .iter()
        .map(|r| Series { points: &r.index })
        .collect();
    let ranks: Vec<Series<'_>> = s
        .regions
        .iter()
        .map(|r| Series { points: &r.ranks })
        .collect();
    let worst = s
        .regions
        .iter()
        .flat_map(|r| r.ranks.iter().map(|(_, v)| *v))
        .fold(1.0_f64, f64::max);
    html! {
        section id={"sound-" (s.clip_id)} {
            h2.title { (title) }
            p.muted {
                @if let Some(a) = meta.and_then(|m| m.author.as_deref()) { span.title { (a) } " · " }
                "clip " (s.clip_id)
                @if let Some(d) = meta.and_then(|m| m.duration) { " · " (d) " s" }
                @if let Some(l) = meta.and_then(|m| web_link(m.link.as_deref())) { " · " a href=(l) rel="noopener noreferrer" { "on TikTok" } }
                @if let Some(c) = meta.and_then(|m| web_link(m.cover.as_deref())) { " · " a href=(c) rel="noopener noreferrer" { "cover" } }
            }
            h3 { "Trend (stitched index, 0–100 per region)" }
            (legend(&regions))
            (line_chart(&format!("Trend of {title} per region"), &index, &YAxis::index()))
            @if s.regions.iter().any(|r| r.segments > 1) {
                p.small.muted { "A region with a gap the windows could not bridge shows its newest segment only (levels compare within a segment)." }
            }
            h3 { "Chart rank" }
            @if ranks.iter().all(|r| r.points.is_empty()) {
                p.empty { "Not ranked in any snapshot." }
            } @else {
                (legend(&regions))
                (line_chart(&format!("Rank history of {title}"), &ranks, &YAxis::rank(worst as i32)))
            }
            div.grid {
                @for r in &s.regions { (region_block(r)) }
            }
        }
    }
}

fn region_block(r: &RegionView) -> Markup {
    html! {
        div {
            h3 { (r.region) }
            p.small.muted {
                "Newest data: fetch " (r.fetch_id) " from " (r.provider) " at "
                (r.fetched_at.format("%Y-%m-%d %H:%M UTC"))
            }
            (audience("Top countries", &r.countries))
            (audience("Top interests", &r.interests))
        }
    }
}

fn audience(heading: &str, list: &[Change]) -> Markup {
    html! {
        @if !list.is_empty() {
            table {
                tr { th { (heading) } th.num { "score" } th.num { "change" } }
                @for c in list {
                    tr {
                        td.title { (c.name) }
                        td.num { (c.score.map(|s| format!("{s:.0}")).unwrap_or_default()) }
                        td.num {
                            @if c.new { span.up { "new" } }
                            @else if let Some(d) = c.delta {
                                span class=(if d > 0.0 { "up" } else if d < 0.0 { "down" } else { "" }) { (format!("{d:+.0}")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn legend(names: &[&str]) -> Markup {
    html! {
        p.legend.small {
            @for (i, n) in names.iter().enumerate() {
                span { span.swatch style={"background:" (css_color(i))} {} (n) }
            }
        }
    }
}

/// Only http(s) links are shown as links: a provider's `javascript:` URL stays text-free.
fn web_link(url: Option<&str>) -> Option<&str> {
    url.filter(|u| u.starts_with("https://") || u.starts_with("http://"))
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn signed(v: Option<i32>) -> String {
    v.map(|v| format!("{v:+}")).unwrap_or_default()
}

fn signed_pct(v: Option<f64>) -> String {
    v.map(|v| format!("{v:+.0} %")).unwrap_or_default()
}
