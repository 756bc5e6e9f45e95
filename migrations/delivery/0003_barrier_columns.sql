-- The recorded reply becomes typed columns instead of JSON, so that reserve and assign can write
-- their barrier row in the same single statement as their effect (one round trip per command).

ALTER TABLE txn_barrier
    ADD COLUMN outcome TEXT,
    ADD COLUMN reason TEXT,
    ADD COLUMN items BIGINT[],
    ADD COLUMN expires_at TIMESTAMPTZ;

UPDATE txn_barrier SET
    outcome = reply -> 'body' ->> 'outcome',
    reason = reply -> 'body' ->> 'reason',
    items = CASE WHEN reply -> 'body' ? 'items' THEN ARRAY(
                SELECT jsonb_array_elements_text(reply -> 'body' -> 'items')::bigint) END,
    expires_at = (reply -> 'body' ->> 'expires_at')::timestamptz
WHERE reply IS NOT NULL;

-- Rows without a reply belonged to transactions that never committed.
DELETE FROM txn_barrier WHERE outcome IS NULL;

ALTER TABLE txn_barrier
    DROP COLUMN reply,
    ALTER COLUMN outcome SET NOT NULL,
    ADD CONSTRAINT txn_barrier_outcome CHECK (outcome IN (
        'reserved', 'busy', 'unavailable', 'aborted', 'assigned', 'refused', 'released'));
