-- flowtel's schema: the single source, applied idempotently at every start
-- (flowtel/_schema.py runs it in one transaction under an advisory lock).
-- Only CREATE ... IF NOT EXISTS / ADD COLUMN IF NOT EXISTS here: it must be safe to run again.

CREATE TABLE IF NOT EXISTS schema_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO schema_meta (key, value) VALUES ('version', '1') ON CONFLICT (key) DO NOTHING;

-- One row per distinct event id: ON CONFLICT (id) DO NOTHING makes every write idempotent.
CREATE TABLE IF NOT EXISTS events (
    id          uuid PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    session_id  uuid,
    user_id     uuid,
    type        text,
    name        text,
    properties  jsonb,
    device_type text,
    browser     text,
    ingested_at timestamptz NOT NULL DEFAULT now()
);

-- Events that could not be stored as such, with their raw JSON as text (it may not be valid
-- jsonb: NUL escapes, broken input) and the reason. Never silently dropped.
CREATE TABLE IF NOT EXISTS rejected_events (
    id          bigserial PRIMARY KEY,
    raw         text NOT NULL,
    reason      text NOT NULL,
    -- true: the event was stored after the repairs `reason` names; false: not stored at all.
    stored      boolean NOT NULL DEFAULT false,
    stream      text,
    rejected_at timestamptz NOT NULL DEFAULT now()
);

-- One row per stream (a listing, or one time shard of the feed): every field of
-- flowtel._model.Checkpoint. Written in the same transaction as the events it covers.
CREATE TABLE IF NOT EXISTS checkpoints (
    stream            text PRIMARY KEY,
    source            text NOT NULL,
    since_ms          bigint,
    until_ms          bigint,
    cursor            text,
    cursor_expires_at timestamptz,
    watermark         timestamptz,
    done              boolean NOT NULL DEFAULT false,
    events            bigint NOT NULL DEFAULT 0,
    pages             bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Every submission attempt, failed ones included (the API allows 5 per key). Never the key.
CREATE TABLE IF NOT EXISTS submissions (
    id            bigserial PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    repo_url      text NOT NULL,
    id_count      bigint NOT NULL,
    http_status   integer,
    response_body text,
    error         text,
    accepted      boolean NOT NULL DEFAULT false
);

-- One row per run, its summary (events written, duplicates, rejected, requests, 429s, retries,
-- elapsed, outcome) as jsonb when it ends.
CREATE TABLE IF NOT EXISTS runs (
    id          bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    summary     jsonb
);
