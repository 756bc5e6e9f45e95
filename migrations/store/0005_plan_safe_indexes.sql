-- An index on (food_id, state) could tempt the planner into using it for reserves, and sorting
-- every available packet of a food, whenever the statistics claim that few are available (they
-- go stale right after a bulk load). Counts per food use state-specific partial indexes instead,
-- and reserves can only use the index built for them.
DROP INDEX IF EXISTS packets_food_state;
CREATE INDEX packets_assigned_by_food ON packets (food_id) WHERE state = 'assigned';
