//! How the store picks a packet for a reservation.

use participant::{Inventory, ItemTable, ReserveError};
use protocol::command::PacketRequest;
use protocol::topology::Participant;

/// The store's items: packets of foods.
#[derive(Clone, Copy, Debug, Default)]
pub struct Packets;

impl Inventory for Packets {
    type Request = PacketRequest;

    const PARTICIPANT: Participant = Participant::Store;

    const TABLE: ItemTable = ItemTable { name: "packets" };

    /// An available packet of the food (`$4`), looking from a random place in the food's range of
    /// packet ids (up, then down from there), or else one whose reservation has expired.
    /// Starting at random spreads concurrent reserves over the packets instead of making them all
    /// contend for the first ones, and avoids walking over the index entries that taken packets
    /// leave at the start until vacuum removes them. `LIMIT 1` over `UNION ALL` stops at the first
    /// branch that finds one.
    const PICK: &'static str = "WITH start AS (
            SELECT packets_lo + floor(random() * (packets_hi - packets_lo + 1))::bigint AS at
            FROM foods WHERE id = $4
        )
        SELECT id FROM (
            SELECT id FROM (
                SELECT id FROM packets
                WHERE food_id = $4 AND state = 'available' AND id >= (SELECT at FROM start)
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) above
            UNION ALL
            SELECT id FROM (
                SELECT id FROM packets
                WHERE food_id = $4 AND state = 'available' AND id < (SELECT at FROM start)
                ORDER BY id DESC LIMIT 1 FOR UPDATE SKIP LOCKED) below
            UNION ALL
            SELECT id FROM (
                SELECT id FROM packets
                WHERE food_id = $4 AND state = 'reserved' AND reserved_until < statement_timestamp()
                ORDER BY reserved_until LIMIT 1 FOR UPDATE SKIP LOCKED) expired
        ) free LIMIT 1";

    /// Nothing free. "All held for now" (a packet locked by a concurrent reserve, or reserved by
    /// an unfinished transaction) is worth a retry; "all assigned" is final.
    const SHORTAGE: &'static str = "CASE
            WHEN NOT EXISTS (SELECT 1 FROM foods WHERE id = $4) THEN 'unknown_food'
            WHEN EXISTS (SELECT 1 FROM packets WHERE food_id = $4 AND state = 'available')
              OR EXISTS (SELECT 1 FROM packets WHERE food_id = $4 AND state = 'reserved')
                THEN 'busy'
            ELSE 'food_unavailable' END";

    fn key(&self, request: &PacketRequest) -> Result<Option<i64>, ReserveError> {
        match request.lines.as_slice() {
            [line] => Ok(Some(line.food_id.0)),
            lines => Err(ReserveError::Invalid(format!(
                "{} lines; the store reserves exactly one line per transaction",
                lines.len()
            ))),
        }
    }
}
