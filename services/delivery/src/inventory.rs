//! How delivery picks an agent for a reservation.

use participant::{Inventory, ItemTable, ReserveError};
use protocol::command::AgentRequest;
use protocol::topology::Participant;

/// Delivery's items: agents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Agents;

impl Inventory for Agents {
    type Request = AgentRequest;

    const PARTICIPANT: Participant = Participant::Delivery;

    const TABLE: ItemTable = ItemTable { name: "agents" };

    /// An available agent, looking from a random place in the range of agent ids (up, then down
    /// from there), or else one whose reservation has expired. Starting at random spreads
    /// concurrent reserves over the agents and avoids walking over the index entries that taken
    /// agents leave at the start until vacuum removes them. `LIMIT 1` over `UNION ALL` stops at
    /// the first branch that finds one. (Any agent will do: no key.)
    const PICK: &'static str = "WITH start AS (
            SELECT floor(random() * (coalesce(max(id), 0) + 1))::bigint AS at FROM agents
        )
        SELECT id FROM (
            SELECT id FROM (
                SELECT id FROM agents
                WHERE state = 'available' AND id >= (SELECT at FROM start)
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) above
            UNION ALL
            SELECT id FROM (
                SELECT id FROM agents
                WHERE state = 'available' AND id < (SELECT at FROM start)
                ORDER BY id DESC LIMIT 1 FOR UPDATE SKIP LOCKED) below
            UNION ALL
            SELECT id FROM (
                SELECT id FROM agents
                WHERE state = 'reserved' AND reserved_until < statement_timestamp()
                ORDER BY reserved_until LIMIT 1 FOR UPDATE SKIP LOCKED) expired
        ) free LIMIT 1";

    /// Nothing free. "All held for now" is worth a retry; "all assigned" is final.
    const SHORTAGE: &'static str = "CASE
            WHEN EXISTS (SELECT 1 FROM agents WHERE state = 'available')
              OR EXISTS (SELECT 1 FROM agents WHERE state = 'reserved')
                THEN 'busy'
            ELSE 'agent_unavailable' END";

    fn key(&self, _request: &AgentRequest) -> Result<Option<i64>, ReserveError> {
        Ok(None)
    }
}
