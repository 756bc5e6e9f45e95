-- The store owns foods and their individual packets. A packet is reserved for one transaction
-- (with an expiry) and then assigned to one order; it is never counted, always picked.

CREATE TABLE foods (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE packets (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    food_id        BIGINT NOT NULL REFERENCES foods (id),
    state          TEXT NOT NULL DEFAULT 'available',
    -- The transaction holding the packet (reserved) or that assigned it (assigned).
    txn_id         UUID,
    order_id       UUID,
    -- Reserved only: after this instant the reservation is void and others may take the packet.
    reserved_until TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT packet_state CHECK (
        (state = 'available' AND txn_id IS NULL AND order_id IS NULL AND reserved_until IS NULL)
        OR (state = 'reserved' AND txn_id IS NOT NULL AND order_id IS NOT NULL AND reserved_until IS NOT NULL)
        OR (state = 'assigned' AND txn_id IS NOT NULL AND order_id IS NOT NULL AND reserved_until IS NULL)
    )
);

-- Reserve: the first free packet of a food, without scanning taken ones.
CREATE INDEX packets_available ON packets (food_id, id) WHERE state = 'available';
-- Reserve (expired reservations of a food are free too) and "held for now" checks.
CREATE INDEX packets_reserved_by_food ON packets (food_id, reserved_until) WHERE state = 'reserved';
-- Expiry sweep.
CREATE INDEX packets_reserved_until ON packets (reserved_until) WHERE state = 'reserved';
-- Assign, release and expiry find a transaction's packet; a transaction holds at most one.
CREATE UNIQUE INDEX packets_txn ON packets (txn_id) WHERE txn_id IS NOT NULL;
-- An order gets at most one packet: never two packets for one order.
CREATE UNIQUE INDEX packets_one_per_order ON packets (order_id) WHERE state = 'assigned';
-- Counts per food for the admin API and the audit.
CREATE INDEX packets_food_state ON packets (food_id, state);

-- Reservations churn the head of packets_available; vacuum often so that reserves do not wade
-- through dead index entries.
ALTER TABLE packets SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
