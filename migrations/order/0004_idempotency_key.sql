-- An optional key chosen by the client (the `Idempotency-Key` header of POST /orders): a request
-- that repeats a customer's key gets the order the first one created instead of a second order.
ALTER TABLE orders ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (customer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
