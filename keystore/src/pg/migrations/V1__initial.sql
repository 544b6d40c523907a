-- BillStack Keys on PostgreSQL: the records of keystore/src/records.rs as typed columns.
-- Times are Unix milliseconds (bigint), as everywhere in the store; ids are the product's own
-- (`team_…`, `key_…`), text. Secrets are never stored: keys, sessions and invitations by their
-- SHA-256 only, passwords as Argon2id PHC strings.

CREATE TABLE teams (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  bigint NOT NULL
);

CREATE TABLE projects (
    team_id     text NOT NULL REFERENCES teams (id),
    id          text NOT NULL,
    name        text NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (team_id, id)
);

CREATE TABLE users (
    id             text PRIMARY KEY,
    email          text NOT NULL UNIQUE,            -- lower-cased before it is stored
    password_hash  text NOT NULL,                   -- empty until an invitee chooses one
    created_at     bigint NOT NULL,
    admin          boolean NOT NULL DEFAULT false
);

CREATE TABLE memberships (
    team_id   text NOT NULL REFERENCES teams (id),
    user_id   text NOT NULL REFERENCES users (id),
    role      text NOT NULL CHECK (role IN ('owner', 'member')),
    added_at  bigint NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE invitations (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id     text NOT NULL UNIQUE REFERENCES users (id),
    expires_at  bigint NOT NULL
);

CREATE TABLE sessions (
    token_hash    bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id       text NOT NULL REFERENCES users (id),
    created_at    bigint NOT NULL,
    last_seen_at  bigint NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Ids compare byte by byte ("C"), so ties in creation time page in the same order on every
-- database, whatever its default collation, and as the sled store pages them.
CREATE TABLE api_keys (
    id                   text COLLATE "C" PRIMARY KEY,
    team_id              text NOT NULL REFERENCES teams (id),
    project_id           text,
    name                 text NOT NULL,
    prefix               text NOT NULL,
    scopes               text[] NOT NULL,
    expires_at           bigint,
    created_at           bigint NOT NULL,
    revoked_at           bigint,
    last_used_at         bigint,
    hash                 bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    rotated_to           text,
    rate_limit           integer CHECK (rate_limit >= 1),
    rate_window_seconds  integer CHECK (rate_window_seconds BETWEEN 1 AND 86400),
    disabled             boolean NOT NULL DEFAULT false,
    created_by           text,
    CHECK ((rate_limit IS NULL) = (rate_window_seconds IS NULL))
);
-- The paged list (newest first) and "is a key scoped to this project".
CREATE INDEX api_keys_by_team_age ON api_keys (team_id, created_at DESC, id DESC)
    WHERE revoked_at IS NULL;
CREATE INDEX api_keys_by_project ON api_keys (team_id, project_id)
    WHERE revoked_at IS NULL AND project_id IS NOT NULL;

CREATE TABLE key_usage (
    key_id   text NOT NULL REFERENCES api_keys (id),
    day      bigint NOT NULL,                       -- days since the Unix epoch (UTC)
    allowed  bigint NOT NULL DEFAULT 0,
    denied   bigint NOT NULL DEFAULT 0,
    refused  jsonb NOT NULL DEFAULT '{}',           -- refusal code → count
    PRIMARY KEY (key_id, day)
);

CREATE TABLE policy_blobs (
    sha256  text PRIMARY KEY,
    bytes   bytea NOT NULL
);

CREATE TABLE team_policies (
    team_id      text PRIMARY KEY REFERENCES teams (id),
    sha256       text NOT NULL REFERENCES policy_blobs (sha256),
    size         bigint NOT NULL,
    uploaded_at  bigint NOT NULL,
    uploaded_by  text NOT NULL
);

CREATE SEQUENCE audit_seq;
CREATE TABLE audit_log (
    seq      bigint PRIMARY KEY,
    at       bigint NOT NULL,
    team_id  text,
    actor    text NOT NULL,
    action   text NOT NULL,
    target   text NOT NULL,
    source   text,
    details  jsonb
);
CREATE INDEX audit_log_by_team ON audit_log (team_id, seq DESC);

-- The change feed replicas follow: one row per write that can change a decision, numbered
-- without gaps in commit order. The number comes from the single row of change_feed_head,
-- updated in the writing transaction: a second writer waits on that row lock until the first
-- commits, so numbers are taken in commit order (a bigserial is not: two transactions can
-- take 5 and 6 and commit 6 first).
CREATE TABLE change_feed_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq        bigint NOT NULL
);
INSERT INTO change_feed_head (singleton, seq) VALUES (true, 0);

CREATE TABLE change_feed (
    seq      bigint PRIMARY KEY,
    at       bigint NOT NULL,
    kind     text NOT NULL CHECK (kind IN ('key', 'policy', 'membership')),
    team_id  text NOT NULL,
    subject  text NOT NULL                          -- a key id, a user id, or the team id
);
