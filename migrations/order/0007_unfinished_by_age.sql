-- The age of the oldest unfinished order of each state (the `orders_oldest_unfinished_age_seconds`
-- gauge, read every few seconds): `min(created_at) WHERE state = '…'` is the first entry of this
-- index, which holds only unfinished orders, so the read never touches finished ones. The
-- operator's list of unfinished orders (`GET /admin/orders`) reads it too.
CREATE INDEX orders_unfinished_by_age ON orders (state, created_at)
    WHERE state IN ('reserving', 'assigning', 'compensating', 'cancelling');
