-- The trace an order belongs to (W3C traceparent of the request that created it), so that a
-- coordinator that takes the order over goes on logging in the same trace.
ALTER TABLE orders ADD COLUMN traceparent TEXT;
