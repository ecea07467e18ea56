-- Audience lists stored once per (pair, content). Most polls of a pair return the audience lists
-- of its previous poll; they were a third of the database (docs/benchmarks.md, section 5). Now a
-- snapshot names its lists by a digest of their content, and each distinct list of a pair is
-- stored once. `audience_countries` and `audience_interests` stay, as views with the same columns
-- and the same rows as the tables they were (one row per entry per successful fetch), so every
-- query written against them reads the same answer.

-- One row per entry of each distinct list. list_id is the first 16 bytes of the SHA-256 of the
-- pair and the list's entries (audience_list_digest below spells the encoding out; the daemon
-- computes the same bytes, src/normalize/lists.rs).
CREATE TABLE audience_country_lists (
    list_id       bytea            NOT NULL,
    position      smallint         NOT NULL,   -- 1 = first in the provider's list
    country_code  text,                        -- the provider's `label`, e.g. 'LV'
    country_name  text,                        -- the provider's `value`, e.g. 'Latvia'
    provider_id   text,
    score         double precision,
    PRIMARY KEY (list_id, position),
    CONSTRAINT audience_country_lists_list_id_is_16_bytes CHECK (octet_length(list_id) = 16)
);

COMMENT ON TABLE audience_country_lists IS 'Each distinct audience-country list of a (clip_id, region), stored once; sound_snapshots.countries_list names the list a snapshot saw. Read audience_countries for one row per entry per fetch. Rows are never deleted: a writer that finds its list stored only names it.';

CREATE TABLE audience_interest_lists (
    list_id       bytea            NOT NULL,
    position      smallint         NOT NULL,
    interest_id   text,                        -- the provider's `id`, e.g. '10004'
    label         text,                        -- e.g. 'diversify_10004'
    name          text,                        -- the provider's `value`, e.g. 'Scripted Drama'
    score         double precision,
    PRIMARY KEY (list_id, position),
    CONSTRAINT audience_interest_lists_list_id_is_16_bytes CHECK (octet_length(list_id) = 16)
);

COMMENT ON TABLE audience_interest_lists IS 'Each distinct audience-interest list of a (clip_id, region), stored once; sound_snapshots.interests_list names the list a snapshot saw. Read audience_interests for one row per entry per fetch.';

ALTER TABLE sound_snapshots
    ADD COLUMN countries_list bytea
        CONSTRAINT sound_snapshots_countries_list_is_16_bytes CHECK (octet_length(countries_list) = 16),
    ADD COLUMN interests_list bytea
        CONSTRAINT sound_snapshots_interests_list_is_16_bytes CHECK (octet_length(interests_list) = 16);

COMMENT ON COLUMN sound_snapshots.countries_list IS 'The audience-country list of this fetch (audience_country_lists.list_id); NULL when the provider listed none. Equal ids: the same list as another snapshot of the pair.';
COMMENT ON COLUMN sound_snapshots.interests_list IS 'The audience-interest list of this fetch (audience_interest_lists.list_id); NULL when the provider listed none.';

-- The digest's encoding, field by field: NULL is one 0x00 byte; a value is 0x01, then for text
-- its UTF-8 length (4 bytes, big-endian) and bytes, for a number its 8 bytes (IEEE 754,
-- big-endian). A list is clip_id, region, then per entry in position order: the position
-- (2 bytes, big-endian) and the entry's four fields.
CREATE FUNCTION audience_list_field(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || int4send(octet_length(convert_to(t, 'UTF8')))
                     || convert_to(t, 'UTF8') END
$$;

CREATE FUNCTION audience_list_field(v double precision) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || float8send(v) END
$$;

COMMENT ON FUNCTION audience_list_field(text) IS 'One field of an audience list as its digest encodes it (see migrations/0010_audience_lists.sql).';

-- Move what is stored: each fetch's list gets its digest, each distinct list is stored once.
CREATE TEMP TABLE migrated_country_lists ON COMMIT DROP AS
SELECT a.fetch_id,
       substring(sha256(audience_list_field(min(a.clip_id)) || audience_list_field(min(a.region))
           || string_agg(int2send(a.position) || audience_list_field(a.provider_id)
                         || audience_list_field(a.country_code)
                         || audience_list_field(a.country_name) || audience_list_field(a.score),
                         ''::bytea ORDER BY a.position)) FROM 1 FOR 16) AS list_id
FROM audience_countries a
GROUP BY a.fetch_id;

INSERT INTO audience_country_lists (list_id, position, country_code, country_name, provider_id, score)
SELECT DISTINCT ON (m.list_id, a.position) m.list_id, a.position, a.country_code, a.country_name,
       a.provider_id, a.score
FROM audience_countries a JOIN migrated_country_lists m USING (fetch_id)
ORDER BY m.list_id, a.position;

CREATE TEMP TABLE migrated_interest_lists ON COMMIT DROP AS
SELECT a.fetch_id,
       substring(sha256(audience_list_field(min(a.clip_id)) || audience_list_field(min(a.region))
           || string_agg(int2send(a.position) || audience_list_field(a.interest_id)
                         || audience_list_field(a.label)
                         || audience_list_field(a.name) || audience_list_field(a.score),
                         ''::bytea ORDER BY a.position)) FROM 1 FOR 16) AS list_id
FROM audience_interests a
GROUP BY a.fetch_id;

INSERT INTO audience_interest_lists (list_id, position, interest_id, label, name, score)
SELECT DISTINCT ON (m.list_id, a.position) m.list_id, a.position, a.interest_id, a.label, a.name,
       a.score
FROM audience_interests a JOIN migrated_interest_lists m USING (fetch_id)
ORDER BY m.list_id, a.position;

-- One rewrite of each snapshot, not one per list.
UPDATE sound_snapshots s SET countries_list = c.list_id, interests_list = i.list_id
FROM sound_snapshots s2
LEFT JOIN migrated_country_lists c ON c.fetch_id = s2.fetch_id
LEFT JOIN migrated_interest_lists i ON i.fetch_id = s2.fetch_id
WHERE s2.fetch_id = s.fetch_id AND (c.list_id IS NOT NULL OR i.list_id IS NOT NULL);

-- Audience rows of a fetch without a snapshot (only hand-edited tables have them) have no
-- snapshot to name their list: say so rather than lose them silently.
DO $$
DECLARE orphans bigint;
BEGIN
    SELECT (SELECT count(*) FROM audience_countries a
            WHERE NOT EXISTS (SELECT 1 FROM sound_snapshots s WHERE s.fetch_id = a.fetch_id))
         + (SELECT count(*) FROM audience_interests a
            WHERE NOT EXISTS (SELECT 1 FROM sound_snapshots s WHERE s.fetch_id = a.fetch_id))
    INTO orphans;
    IF orphans > 0 THEN
        RAISE NOTICE 'audience lists: % rows belonged to fetches without a snapshot and are not shown by the new views (soundtrend replay rebuilds them from the raw bodies)', orphans;
    END IF;
END
$$;

DROP VIEW audience_country_share;
DROP VIEW audience_interest_share;
DROP TABLE audience_countries;
DROP TABLE audience_interests;

-- The rows analysts read, as before: one per entry per successful fetch.
CREATE VIEW audience_countries AS
SELECT s.fetch_id, l.position, s.clip_id, s.region, s.observed_at,
       l.country_code, l.country_name, l.provider_id, l.score
FROM sound_snapshots s
JOIN audience_country_lists l ON l.list_id = s.countries_list;

COMMENT ON VIEW audience_countries IS 'The provider''s top audience countries, one row per entry per successful fetch (position 1 = first). Stored once per distinct list of a pair (audience_country_lists); to see only changes, compare sound_snapshots.countries_list between a pair''s snapshots.';

CREATE VIEW audience_interests AS
SELECT s.fetch_id, l.position, s.clip_id, s.region, s.observed_at,
       l.interest_id, l.label, l.name, l.score
FROM sound_snapshots s
JOIN audience_interest_lists l ON l.list_id = s.interests_list;

COMMENT ON VIEW audience_interests IS 'The provider''s top audience interests, one row per entry per successful fetch. Stored once per distinct list of a pair (audience_interest_lists); sound_snapshots.interests_list tells when it changed.';

CREATE VIEW audience_country_share AS
SELECT a.fetch_id,
       a.clip_id,
       a.region,
       a.observed_at,
       a.position,
       a.country_code,
       a.country_name,
       a.score,
       a.score / NULLIF(tot.total, 0)                    AS share,
       prev.fetch_id                                    AS previous_fetch_id,
       a.score / NULLIF(tot.total, 0) - prev.share      AS share_change
FROM audience_countries a
CROSS JOIN LATERAL (SELECT sum(x.score) AS total FROM audience_countries x
                    WHERE x.fetch_id = a.fetch_id) tot
LEFT JOIN LATERAL (
    SELECT s.fetch_id,
           (SELECT y.score FROM audience_countries y
            WHERE y.fetch_id = s.fetch_id AND y.country_code = a.country_code
            ORDER BY y.position LIMIT 1)
           / NULLIF((SELECT sum(z.score) FROM audience_countries z WHERE z.fetch_id = s.fetch_id), 0)
               AS share
    FROM sound_snapshots s
    WHERE s.clip_id = a.clip_id AND s.region = a.region
      AND s.observed_at < a.observed_at
    ORDER BY s.observed_at DESC
    LIMIT 1
) prev ON true;

COMMENT ON VIEW audience_country_share IS 'Per snapshot (fetch_id), each listed audience country''s share of the listed total, and its change since the previous snapshot of the same (clip_id, region).';
COMMENT ON COLUMN audience_country_share.share IS 'score / sum of the scores the provider listed in this snapshot (0-1). The provider lists its top countries only, so shares are of the listed total, not of all listeners.';
COMMENT ON COLUMN audience_country_share.previous_fetch_id IS 'The previous snapshot of the same pair (fetches.id); NULL for the first.';
COMMENT ON COLUMN audience_country_share.share_change IS 'share minus the same country''s share in the previous snapshot (share points, -1..1); NULL when the country was not listed then or there is no previous snapshot.';

CREATE VIEW audience_interest_share AS
SELECT a.fetch_id,
       a.clip_id,
       a.region,
       a.observed_at,
       a.position,
       a.interest_id,
       a.name,
       a.score,
       a.score / NULLIF(tot.total, 0)                    AS share,
       prev.fetch_id                                    AS previous_fetch_id,
       a.score / NULLIF(tot.total, 0) - prev.share      AS share_change
FROM audience_interests a
CROSS JOIN LATERAL (SELECT sum(x.score) AS total FROM audience_interests x
                    WHERE x.fetch_id = a.fetch_id) tot
LEFT JOIN LATERAL (
    SELECT s.fetch_id,
           (SELECT y.score FROM audience_interests y
            WHERE y.fetch_id = s.fetch_id AND y.interest_id = a.interest_id
            ORDER BY y.position LIMIT 1)
           / NULLIF((SELECT sum(z.score) FROM audience_interests z WHERE z.fetch_id = s.fetch_id), 0)
               AS share
    FROM sound_snapshots s
    WHERE s.clip_id = a.clip_id AND s.region = a.region
      AND s.observed_at < a.observed_at
    ORDER BY s.observed_at DESC
    LIMIT 1
) prev ON true;

COMMENT ON VIEW audience_interest_share IS 'Per snapshot (fetch_id), each listed audience interest''s share of the listed total, and its change since the previous snapshot of the same (clip_id, region).';
COMMENT ON COLUMN audience_interest_share.share IS 'score / sum of the scores the provider listed in this snapshot (0-1): a share of the listed interests, not of all listeners.';
COMMENT ON COLUMN audience_interest_share.previous_fetch_id IS 'The previous snapshot of the same pair (fetches.id); NULL for the first.';
COMMENT ON COLUMN audience_interest_share.share_change IS 'share minus the same interest''s share in the previous snapshot (share points); NULL when it was not listed then or there is no previous snapshot.';
