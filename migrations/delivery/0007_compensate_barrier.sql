-- Compensation claims a barrier row of its own ('compensate'), apart from the release of a retry
-- or an abort ('release'). An abort frees only what is reserved and never undoes an assignment
-- (a driver that recovered the order may have assigned it after the abort was sent); the
-- compensation that follows a failed phase 2 must still free what is assigned, even when an
-- abort of the same transaction came first.
ALTER TABLE txn_barrier DROP CONSTRAINT txn_barrier_operation_check;
ALTER TABLE txn_barrier ADD CONSTRAINT txn_barrier_operation_check
    CHECK (operation IN ('reserve', 'assign', 'release', 'compensate', 'cancel'));
