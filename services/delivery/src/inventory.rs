//! How delivery picks an agent of a hub for a reservation.

use participant::{Inventory, ItemTable, Key, ReserveError};
use protocol::command::AgentRequest;
use protocol::topology::Participant;

/// Delivery's items: agents, each in one hub.
#[derive(Clone, Copy, Debug, Default)]
pub struct Agents;

impl Inventory for Agents {
    type Request = AgentRequest;

    const PARTICIPANT: Participant = Participant::Delivery;

    const TABLE: ItemTable = ItemTable { name: "agents" };

    /// An available agent of the hub (`$4`), looking from a random place in the range of the
    /// hub's agent ids (up, then down from there), or else one whose reservation has expired.
    /// Off-duty agents and agents out on a delivery are never picked. Starting at random spreads
    /// concurrent reserves over the agents and avoids walking over the index entries that taken
    /// agents leave at the start until vacuum removes them. `LIMIT 1` over `UNION ALL` stops at
    /// the first branch that finds one.
    const PICK: &'static str = "WITH start AS (
            SELECT agents_lo + floor(random() * (agents_hi - agents_lo + 1))::bigint AS at
            FROM hubs WHERE id = $4
        )
        SELECT id FROM (
            SELECT id FROM (
                SELECT id FROM agents
                WHERE hub_id = $4 AND state = 'available' AND id >= (SELECT at FROM start)
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) above
            UNION ALL
            SELECT id FROM (
                SELECT id FROM agents
                WHERE hub_id = $4 AND state = 'available' AND id < (SELECT at FROM start)
                ORDER BY id DESC LIMIT 1 FOR UPDATE SKIP LOCKED) below
            UNION ALL
            SELECT id FROM (
                SELECT id FROM agents
                WHERE hub_id = $4 AND state = 'reserved' AND reserved_until < statement_timestamp()
                ORDER BY reserved_until LIMIT 1 FOR UPDATE SKIP LOCKED) expired
        ) free LIMIT 1";

    /// Nothing free at the hub. "All held for now" is worth a retry; all assigned, out on
    /// deliveries or off duty is final for this order.
    const SHORTAGE: &'static str = "SELECT CASE
            WHEN EXISTS (SELECT 1 FROM agents WHERE hub_id = $4 AND state = 'available')
              OR EXISTS (SELECT 1 FROM agents WHERE hub_id = $4 AND state = 'reserved')
                THEN 'busy'
            ELSE 'agent_unavailable' END AS v, NULL::bigint[] AS short";

    fn key(&self, request: &AgentRequest) -> Result<Key, ReserveError> {
        Ok(Key {
            hub: request.hub_id.0,
            ..Key::default()
        })
    }
}
