-- Delivery owns its agents. An agent is reserved for one transaction (with an expiry) and then
-- assigned to one order.

CREATE TABLE agents (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL: shown as "agent-<id>".
    name           TEXT CHECK (length(name) BETWEEN 1 AND 200),
    state          TEXT NOT NULL DEFAULT 'available',
    -- The transaction holding the agent (reserved) or that assigned it (assigned).
    txn_id         UUID,
    order_id       UUID,
    -- Reserved only: after this instant the reservation is void and others may take the agent.
    reserved_until TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT agent_state CHECK (
        (state = 'available' AND txn_id IS NULL AND order_id IS NULL AND reserved_until IS NULL)
        OR (state = 'reserved' AND txn_id IS NOT NULL AND order_id IS NOT NULL AND reserved_until IS NOT NULL)
        OR (state = 'assigned' AND txn_id IS NOT NULL AND order_id IS NOT NULL AND reserved_until IS NULL)
    )
);

-- Reserve: the first free agent, without scanning taken ones.
CREATE INDEX agents_available ON agents (id) WHERE state = 'available';
-- Reserve (expired reservations are free too), "held for now" checks and the expiry sweep.
CREATE INDEX agents_reserved_until ON agents (reserved_until) WHERE state = 'reserved';
-- Assign, release and expiry find a transaction's agent; a transaction holds at most one.
CREATE UNIQUE INDEX agents_txn ON agents (txn_id) WHERE txn_id IS NOT NULL;
-- An order gets at most one agent.
CREATE UNIQUE INDEX agents_one_per_order ON agents (order_id) WHERE state = 'assigned';
-- Counts for the admin API and the audit.
CREATE INDEX agents_state ON agents (state);

ALTER TABLE agents SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
