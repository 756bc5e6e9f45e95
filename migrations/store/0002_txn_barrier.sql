-- The barrier: one row per (transaction, operation) applied, with the reply sent. It makes every
-- command idempotent (a redelivered command gets the recorded reply and changes nothing) and
-- stops hanging reservations: a release writes "refused" rows for the reserve and assign of its
-- transaction, so that a reserve arriving after the release is refused instead of holding an item
-- for a dead transaction.

CREATE TABLE txn_barrier (
    txn_id     UUID NOT NULL,
    operation  TEXT NOT NULL CHECK (operation IN ('reserve', 'assign', 'release')),
    order_id   UUID NOT NULL,
    -- NULL only inside the transaction that applies the operation.
    reply      JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (txn_id, operation)
);

-- Old rows are pruned once no redelivery can reach them any more.
CREATE INDEX txn_barrier_created_at ON txn_barrier (created_at);
