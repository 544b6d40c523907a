-- Replicas following the change feed (DESIGN.md § Storage backends and replicas). Each serving
-- process has one row: the last feed position it has applied to its caches, and a heartbeat
-- written by every poll of the feed. Times are the database's clock (Unix ms), so no two
-- machines' clocks are ever compared. A write that must hold on every replica (revoke,
-- disable, PATCH, rotate) waits until every replica with a live heartbeat has applied it, or
-- for one lease, after which a replica that has not confirmed refuses by itself.
CREATE TABLE replicas (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    applied_seq   bigint NOT NULL,
    heartbeat_at  bigint NOT NULL,
    started_at    bigint NOT NULL,
    lease_ms      integer NOT NULL CHECK (lease_ms > 0)
);

-- Counters every replica adds to: per-key request budgets and sign-in throttles, in windows
-- aligned to the clock (window_start is a multiple of window_ms). A replica counts locally and
-- adds its counts here often; near a limit it adds each request at once (host/src/ratelimit.rs).
CREATE TABLE shared_counters (
    name          text NOT NULL,
    window_start  bigint NOT NULL,
    window_ms     bigint NOT NULL CHECK (window_ms > 0),
    count         bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (name, window_start)
);
