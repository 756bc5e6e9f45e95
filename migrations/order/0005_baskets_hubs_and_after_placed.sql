-- An order is a basket (lines of a food and a quantity) from one hub, and its life goes on after
-- "placed": picked up, delivered, or cancelled by the customer.
--
--   placed ──> picked_up ──> delivered
--     │            ^
--     v            │ (the agent had picked it up)
--   cancelling ────┘
--     └──> cancelled

ALTER TABLE orders ADD COLUMN hub_id BIGINT NOT NULL DEFAULT 1;
ALTER TABLE orders ALTER COLUMN hub_id DROP DEFAULT;
-- [{"food_id": 1, "quantity": 2}, ...]: each food at most once.
ALTER TABLE orders ADD COLUMN lines JSONB;
UPDATE orders SET lines = jsonb_build_array(jsonb_build_object('food_id', food_id, 'quantity', 1));
ALTER TABLE orders ALTER COLUMN lines SET NOT NULL;
-- Every packet of every line, from the commit decision on.
ALTER TABLE orders ADD COLUMN packet_ids BIGINT[];
UPDATE orders SET packet_ids = ARRAY[packet_id] WHERE packet_id IS NOT NULL;

ALTER TABLE orders DROP CONSTRAINT decided_orders_know_their_items;
ALTER TABLE orders DROP CONSTRAINT finished_iff_final;
ALTER TABLE orders DROP COLUMN food_id, DROP COLUMN packet_id;

ALTER TABLE orders DROP CONSTRAINT orders_state_check;
ALTER TABLE orders ADD CONSTRAINT orders_state_check
    CHECK (state IN ('reserving', 'assigning', 'compensating', 'placed', 'not_placed', 'picked_up', 'delivered', 'cancelling', 'cancelled'));
ALTER TABLE orders DROP CONSTRAINT orders_reason_check;
ALTER TABLE orders ADD CONSTRAINT orders_reason_check
    CHECK (reason IN ('food_unavailable', 'unknown_food', 'agent_unavailable', 'timeout', 'assign_failed', 'unknown_hub'));
ALTER TABLE orders ADD CONSTRAINT decided_orders_know_their_items CHECK (
    state IN ('reserving', 'not_placed')
    OR (cardinality(packet_ids) > 0 AND agent_id IS NOT NULL AND reserved_until IS NOT NULL));
-- `finished_at`: when placement ended (placed or not).
ALTER TABLE orders ADD CONSTRAINT finished_iff_final CHECK (
    (state IN ('reserving', 'assigning', 'compensating')) = (finished_at IS NULL));

-- Recovery claims driven orders whose lease ran out, cancellations included.
DROP INDEX orders_unfinished;
CREATE INDEX orders_unfinished ON orders (lease_until)
    WHERE state IN ('reserving', 'assigning', 'compensating', 'cancelling');
