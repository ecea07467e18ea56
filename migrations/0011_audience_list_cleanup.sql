-- `soundtrend replay` now deletes the audience lists no snapshot names any more (a list today's
-- rules no longer derive, or whose snapshots went with an invalidated body). The tables' comments
-- said rows were never deleted; they say what is true now.

COMMENT ON TABLE audience_country_lists IS 'Each distinct audience-country list of a (clip_id, region), stored once; sound_snapshots.countries_list names the list a snapshot saw. Read audience_countries for one row per entry per fetch. A writer that finds its list stored only names it; soundtrend replay deletes lists no snapshot names any more.';

COMMENT ON TABLE audience_interest_lists IS 'Each distinct audience-interest list of a (clip_id, region), stored once; sound_snapshots.interests_list names the list a snapshot saw. Read audience_interests for one row per entry per fetch. soundtrend replay deletes lists no snapshot names any more.';
