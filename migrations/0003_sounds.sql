-- Normalized data. Every derived row carries the fetch_id it came from, so any row can be traced to
-- the raw body in `fetches` and rebuilt from it.

-- Stable metadata: one row per clip, updated from the newest observation.
CREATE TABLE sounds (
    clip_id        text PRIMARY KEY,
    song_id        text,
    title          text,
    author         text,
    url_title      text,
    duration       integer,          -- seconds
    cover          text,
    link           text,
    music_url      text,
    if_cml         boolean,
    is_search      boolean,
    promoted       boolean,
    first_seen_at  timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    last_fetch_id  bigint NOT NULL REFERENCES fetches (id)
);

COMMENT ON TABLE sounds IS 'One row per sound (clip_id) with its stable metadata from the newest observation.';

-- What changes per region and over time: one row per successful fetch.
CREATE TABLE sound_snapshots (
    fetch_id           bigint PRIMARY KEY REFERENCES fetches (id),
    clip_id            text        NOT NULL,
    region             text        NOT NULL,
    period             smallint    NOT NULL,
    observed_at        timestamptz NOT NULL,
    country_code       text,
    rank               integer,
    rank_diff          integer,
    on_list_times      integer,
    popular_days       integer,
    current_popularity double precision,
    like_count         bigint,
    liked              jsonb,
    disliked           jsonb,
    trend_points       integer     NOT NULL,
    audience_ages      jsonb,
    related_items      jsonb
);

CREATE INDEX sound_snapshots_clip_region_time_idx
    ON sound_snapshots (clip_id, region, observed_at DESC);

-- Daily trend values. The provider's values are relative to the window they came in (its maximum
-- is 1), so the same day has different values in a 7-day and a 30-day window. A newer observation
-- replaces the days it covers; older windows stay recoverable from fetches.body_json.
CREATE TABLE trend_points (
    clip_id      text             NOT NULL,
    region       text             NOT NULL,
    ts           timestamptz      NOT NULL,
    value        double precision NOT NULL,
    fetch_id     bigint           NOT NULL REFERENCES fetches (id),
    period       smallint         NOT NULL,
    observed_at  timestamptz      NOT NULL,
    PRIMARY KEY (clip_id, region, ts)
);

COMMENT ON TABLE trend_points IS 'Daily trend value per (clip_id, region, day), from the newest window that covered the day; value is relative to that window (max 1).';

CREATE INDEX trend_points_fetch_idx ON trend_points (fetch_id);

-- Audience breakdowns: the provider's top lists, one row per entry per successful fetch.
CREATE TABLE audience_countries (
    fetch_id      bigint           NOT NULL REFERENCES fetches (id),
    position      smallint         NOT NULL,   -- 1 = first in the provider's list
    clip_id       text             NOT NULL,
    region        text             NOT NULL,
    observed_at   timestamptz      NOT NULL,
    country_code  text,                        -- the provider's `label`, e.g. 'LV'
    country_name  text,                        -- the provider's `value`, e.g. 'Latvia'
    provider_id   text,
    score         double precision,
    PRIMARY KEY (fetch_id, position)
);

CREATE INDEX audience_countries_clip_region_time_idx
    ON audience_countries (clip_id, region, observed_at DESC);

CREATE TABLE audience_interests (
    fetch_id      bigint           NOT NULL REFERENCES fetches (id),
    position      smallint         NOT NULL,
    clip_id       text             NOT NULL,
    region        text             NOT NULL,
    observed_at   timestamptz      NOT NULL,
    interest_id   text,                        -- the provider's `id`, e.g. '10004'
    label         text,                        -- e.g. 'diversify_10004'
    name          text,                        -- the provider's `value`, e.g. 'Scripted Drama'
    score         double precision,
    PRIMARY KEY (fetch_id, position)
);

CREATE INDEX audience_interests_clip_region_time_idx
    ON audience_interests (clip_id, region, observed_at DESC);
