-- What an operator sees of unfinished orders and can do to them (`/admin/orders`).

-- The coordinator that holds an order's lease: the `application_name` of its database
-- connections (`order-service <instance>`; its reply queue is `order.replies.<instance>`). New
-- orders take it by default; every statement that takes a lease sets it. Added without a
-- default first, so that existing rows are not rewritten.
ALTER TABLE orders ADD COLUMN lease_holder TEXT;
ALTER TABLE orders ALTER COLUMN lease_holder SET DEFAULT current_setting('application_name');

-- `aborted`: an operator aborted the order before its commit decision.
ALTER TABLE orders DROP CONSTRAINT orders_reason_check;
ALTER TABLE orders ADD CONSTRAINT orders_reason_check
    CHECK (reason IN ('food_unavailable', 'unknown_food', 'agent_unavailable', 'timeout', 'assign_failed', 'unknown_hub', 'aborted')) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_reason_check;
