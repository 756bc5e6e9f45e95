-- The orders in flight at a hub (being placed, placed, picked up, being cancelled), oldest first,
-- for the operator API's `GET /admin/hubs/{id}/orders` (and the console): the read touches only
-- the orders in flight at that hub, never the finished ones.
CREATE INDEX orders_in_flight_by_hub ON orders (hub_id, created_at)
    WHERE state IN ('reserving', 'assigning', 'compensating', 'placed', 'picked_up', 'cancelling');
