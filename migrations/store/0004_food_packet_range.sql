-- The range of packet ids of each food, so that a reserve can start looking at a random place in
-- it: concurrent reserves then rarely contend for the same rows, and none has to walk over the
-- index entries that taken packets leave at the start of the range until they are vacuumed.

ALTER TABLE foods ADD COLUMN packets_lo BIGINT, ADD COLUMN packets_hi BIGINT;

UPDATE foods f SET packets_lo = r.lo, packets_hi = r.hi
FROM (SELECT food_id, min(id) AS lo, max(id) AS hi FROM packets GROUP BY food_id) r
WHERE r.food_id = f.id;
