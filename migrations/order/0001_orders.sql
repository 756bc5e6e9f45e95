-- The coordinator's record of every order and its transaction. This table is the truth: a
-- coordinator that restarts (or another one) finishes every order from what is recorded here.
--
--   reserving ──(both reserved: commit decision)──> assigning ──(both assigned)──> placed
--       │                                               │
--       │ (a reservation failed, or the deadline)       │ (an assign failed for good)
--       v                                               v
--   not_placed <──────(both sides released)────── compensating

CREATE TABLE orders (
    id             UUID PRIMARY KEY,
    customer_id    TEXT NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 200),
    food_id        BIGINT NOT NULL,
    state          TEXT NOT NULL
        CHECK (state IN ('reserving', 'assigning', 'compensating', 'placed', 'not_placed')),
    -- Why the order is (being) not placed.
    reason         TEXT CHECK (reason IN (
        'food_unavailable', 'unknown_food', 'agent_unavailable', 'timeout', 'assign_failed')),
    -- The current transaction attempt; earlier attempts were released before this one began.
    txn_id         UUID NOT NULL,
    attempt        INT NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    -- Known from the commit decision on.
    packet_id      BIGINT,
    agent_id       BIGINT,
    -- The earlier of the two reservations' expiry: phase 2 cannot succeed after it.
    reserved_until TIMESTAMPTZ,
    -- When the order should be final at the latest: the phase-1 deadline, then (from the commit
    -- decision) the end of phase 2's retry window. The audit flags orders past it.
    deadline       TIMESTAMPTZ NOT NULL,
    -- The lease of the task driving the order: a fresh token per claim, and until when. Every
    -- state change must present the token (a fencing token), so a driver that lost its lease
    -- cannot change the order; an expired lease may be claimed by any coordinator.
    lease_token    UUID,
    lease_until    TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    CONSTRAINT decided_orders_know_their_items CHECK (
        state NOT IN ('assigning', 'compensating', 'placed')
        OR (packet_id IS NOT NULL AND agent_id IS NOT NULL AND reserved_until IS NOT NULL)),
    CONSTRAINT reason_iff_not_placing CHECK (
        (state IN ('compensating', 'not_placed')) = (reason IS NOT NULL)),
    CONSTRAINT finished_iff_final CHECK (
        (state IN ('placed', 'not_placed')) = (finished_at IS NOT NULL))
);

-- Recovery claims unfinished orders whose lease ran out, without scanning finished ones.
CREATE INDEX orders_unfinished ON orders (lease_until)
    WHERE state IN ('reserving', 'assigning', 'compensating');
