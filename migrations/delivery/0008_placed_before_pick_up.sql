-- A rider may pick an order up only once the order is placed. Delivery assigns its agent before
-- the coordinator knows whether the store's packets are assigned too (the store's assign can
-- still fail, and then the agent is taken back): it learns that the order is placed from the
-- coordinator's `order.placed` event, and marks the agent with it. The mark counts only while it
-- equals the agent's `order_id`, so freeing the agent (cancel, compensation, delivery) needs no
-- change: an old mark names an order the agent no longer has.
ALTER TABLE agents ADD COLUMN placed_order_id UUID;
