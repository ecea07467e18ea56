-- The quota shared by every soundtrend instance on this database, one row per provider.
--
-- Rate: GCRA. `tat` is the theoretical arrival time of the next request; a request at time t is
-- allowed when max(tat, t) + T <= t + burst * T (T = 1 / requests_per_second), and moves tat to
-- max(tat, t) + T. One UPDATE does the test and the move, so instances never race.
-- A 429 sets paused_until; nobody sends before it.
CREATE TABLE provider_quota (
    provider          text PRIMARY KEY,
    tat               timestamptz NOT NULL DEFAULT now(),
    paused_until      timestamptz NOT NULL DEFAULT 'epoch',
    -- Set when the provider rejected the credentials (401/403); cleared by the next success.
    auth_failed_at    timestamptz,
    auth_error        text,
    CONSTRAINT provider_quota_provider_known CHECK (provider IN ('keyapi', 'echotik'))
);

-- Credits spent per provider and UTC day. A request is only sent after its credits were added here
-- within the day's budget, so the budget is never overspent, whatever number of instances run.
CREATE TABLE credit_usage (
    provider      text    NOT NULL,
    day           date    NOT NULL,
    credits_used  integer NOT NULL DEFAULT 0,
    requests      integer NOT NULL DEFAULT 0,
    budget        integer,              -- the budget in force when last charged; NULL = unlimited
    exhausted_at  timestamptz,          -- first refusal of the day for lack of credits
    PRIMARY KEY (provider, day),
    CONSTRAINT credit_usage_not_negative CHECK (credits_used >= 0)
);

COMMENT ON TABLE credit_usage IS 'Credits spent per provider and UTC day; exhausted_at is set when the daily budget stopped polling.';
