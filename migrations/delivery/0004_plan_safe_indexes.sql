-- An index on state could tempt the planner into using it for reserves, and sorting every
-- available agent, whenever the statistics claim that few are available (they go stale right
-- after a bulk load). The summary counts scan the table; reserves can only use the index built
-- for them.
DROP INDEX IF EXISTS agents_state;
