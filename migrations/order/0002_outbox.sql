-- Order events waiting to be published. A final order and its event are written in one
-- transaction; a relay publishes unsent events with publisher confirms and marks them sent only
-- after the confirm. A crash in between publishes the event again, with the same event_id.

CREATE TABLE outbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    order_id    UUID NOT NULL,
    routing_key TEXT NOT NULL,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);

-- The relay's queue: unsent events in order.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
-- Pruning of sent events.
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
