-- Agents belong to a hub (a dark store), go on and off duty, and carry their order from pick-up
-- to delivery. The hub ids are the store's; delivery keeps, per hub, the range of its agents'
-- ids (so that a reserve can start looking at a random place in it). The existing agents become
-- the default hub's.

CREATE TABLE hubs (
    id        BIGINT PRIMARY KEY,
    agents_lo BIGINT NOT NULL,
    agents_hi BIGINT NOT NULL
);
INSERT INTO hubs (id, agents_lo, agents_hi)
SELECT 1, coalesce(min(id), 1), coalesce(max(id), 1) FROM agents;

ALTER TABLE agents ADD COLUMN hub_id BIGINT NOT NULL DEFAULT 1 REFERENCES hubs (id);
ALTER TABLE agents ALTER COLUMN hub_id DROP DEFAULT;

-- Two more states: `delivering` (picked up: still the order's, and no cancel can free it) and
-- `off_duty` (never reserved; only an agent that holds nothing goes off duty).
ALTER TABLE agents DROP CONSTRAINT agent_state;
ALTER TABLE agents ADD CONSTRAINT agent_state CHECK (
    (state = 'available' AND txn_id IS NULL AND order_id IS NULL AND reserved_until IS NULL)
    OR (state = 'reserved' AND txn_id IS NOT NULL AND order_id IS NOT NULL AND reserved_until IS NOT NULL)
    OR (state IN ('assigned', 'delivering')
        AND txn_id IS NOT NULL AND order_id IS NOT NULL AND reserved_until IS NULL)
    OR (state = 'off_duty' AND txn_id IS NULL AND order_id IS NULL AND reserved_until IS NULL)
);

-- Reserve: the free agents of a hub, without scanning taken ones or other hubs.
DROP INDEX agents_available;
CREATE INDEX agents_available ON agents (hub_id, id) WHERE state = 'available';
CREATE INDEX agents_reserved_by_hub ON agents (hub_id, reserved_until) WHERE state = 'reserved';
-- An order has at most one agent, from assignment to delivery; pick-up finds it by order.
DROP INDEX agents_one_per_order;
CREATE UNIQUE INDEX agents_one_per_order ON agents (order_id) WHERE state IN ('assigned', 'delivering');

-- Each picked-up order: its agent, and when it was picked up and delivered.
CREATE TABLE deliveries (
    order_id     UUID PRIMARY KEY,
    agent_id     BIGINT NOT NULL REFERENCES agents (id),
    hub_id       BIGINT NOT NULL,
    txn_id       UUID NOT NULL,
    picked_up_at TIMESTAMPTZ NOT NULL,
    delivered_at TIMESTAMPTZ
);
-- The audit: an agent has at most one delivery under way.
CREATE UNIQUE INDEX deliveries_one_under_way ON deliveries (agent_id) WHERE delivered_at IS NULL;

-- Progress reports to the coordinator, written with the progress in one transaction and
-- published by a relay with confirms (as the coordinator's own outbox).
CREATE TABLE outbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    order_id    UUID NOT NULL,
    routing_key TEXT NOT NULL,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Cancellation: a placed order's agent is free again unless it picked the order up.
ALTER TABLE txn_barrier DROP CONSTRAINT txn_barrier_operation_check;
ALTER TABLE txn_barrier ADD CONSTRAINT txn_barrier_operation_check
    CHECK (operation IN ('reserve', 'assign', 'release', 'cancel'));
ALTER TABLE txn_barrier DROP CONSTRAINT txn_barrier_outcome;
ALTER TABLE txn_barrier ADD CONSTRAINT txn_barrier_outcome CHECK (outcome IN (
    'reserved', 'busy', 'unavailable', 'aborted', 'assigned', 'refused', 'released', 'cancelled'));
