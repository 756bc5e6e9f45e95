//! How the store picks the packets of a basket for a reservation.

use std::collections::HashSet;

use participant::{Inventory, ItemTable, Key, ReserveError};
use protocol::command::{MAX_LINES, MAX_QUANTITY, PacketRequest};
use protocol::topology::Participant;

/// The store's items: packets of foods, each in one hub.
#[derive(Clone, Copy, Debug, Default)]
pub struct Packets;

impl Inventory for Packets {
    type Request = PacketRequest;

    const PARTICIPANT: Participant = Participant::Store;

    const TABLE: ItemTable = ItemTable { name: "packets" };

    /// For each line (`$5` foods, `$6` quantities), `quantity` packets of the food at the hub
    /// (`$4`): available ones, looking from a random place in the range of the food's packet ids
    /// at that hub (up, then down from there), else ones whose reservation has expired. Every
    /// packet of every line, or none: if any line is short, no row is returned (the packets
    /// locked meanwhile stay untouched and are unlocked when the statement's transaction ends).
    ///
    /// Each line is an index lookup within its (hub, food): the cost does not grow with the
    /// number of hubs, foods or packets. Starting at random spreads concurrent reserves over the
    /// packets instead of making them all contend for the first ones. `LIMIT` over `UNION ALL`
    /// stops at the first branches that find enough.
    const PICK: &'static str = "WITH wanted AS (
            SELECT w.food_id, w.quantity,
                   s.packets_lo + floor(random() * (s.packets_hi - s.packets_lo + 1))::bigint AS at
            FROM unnest($5::bigint[], $6::int[]) AS w(food_id, quantity)
            JOIN stock s ON s.hub_id = $4 AND s.food_id = w.food_id
        ),
        candidates AS (
            SELECT c.id FROM wanted w
            CROSS JOIN LATERAL (
                SELECT id FROM (
                    SELECT id FROM (
                        SELECT id FROM packets
                        WHERE hub_id = $4 AND food_id = w.food_id AND state = 'available'
                          AND id >= w.at
                        ORDER BY id LIMIT w.quantity FOR UPDATE SKIP LOCKED) above
                    UNION ALL
                    SELECT id FROM (
                        SELECT id FROM packets
                        WHERE hub_id = $4 AND food_id = w.food_id AND state = 'available'
                          AND id < w.at
                        ORDER BY id DESC LIMIT w.quantity FOR UPDATE SKIP LOCKED) below
                    UNION ALL
                    SELECT id FROM (
                        SELECT id FROM packets
                        WHERE hub_id = $4 AND food_id = w.food_id AND state = 'reserved'
                          AND reserved_until < statement_timestamp()
                        ORDER BY reserved_until LIMIT w.quantity FOR UPDATE SKIP LOCKED) expired
                ) free LIMIT w.quantity
            ) c
        )
        SELECT id FROM candidates
        WHERE (SELECT count(*) FROM candidates)
              = (SELECT coalesce(sum(q), 0) FROM unnest($6::int[]) AS q)";

    /// Not every line could be picked. A line with fewer packets free or held at the hub than it
    /// asks for is short for good (the rest are assigned): `food_unavailable`, naming the short
    /// foods. Otherwise some packets are only held by unfinished transactions (or locked by a
    /// concurrent reserve) for now: `busy`, worth a retry. Each count stops at the quantity.
    const SHORTAGE: &'static str = "WITH lines AS (
            SELECT food_id, quantity FROM unnest($5::bigint[], $6::int[]) AS w(food_id, quantity)
        ),
        unknown AS (
            SELECT array_agg(l.food_id ORDER BY l.food_id) AS ids FROM lines l
            WHERE NOT EXISTS (SELECT 1 FROM foods f WHERE f.id = l.food_id)
        ),
        short AS (
            SELECT array_agg(l.food_id ORDER BY l.food_id) AS ids FROM lines l
            WHERE (SELECT count(*) FROM (
                       SELECT 1 FROM packets p
                       WHERE p.hub_id = $4 AND p.food_id = l.food_id AND p.state = 'available'
                       LIMIT l.quantity) a)
                + (SELECT count(*) FROM (
                       SELECT 1 FROM packets p
                       WHERE p.hub_id = $4 AND p.food_id = l.food_id AND p.state = 'reserved'
                       LIMIT l.quantity) r)
                < l.quantity
        )
        SELECT CASE
                   WHEN NOT EXISTS (SELECT 1 FROM hubs WHERE id = $4) THEN 'unknown_hub'
                   WHEN (SELECT ids FROM unknown) IS NOT NULL THEN 'unknown_food'
                   WHEN (SELECT ids FROM short) IS NOT NULL THEN 'food_unavailable'
                   ELSE 'busy' END AS v,
               CASE
                   WHEN NOT EXISTS (SELECT 1 FROM hubs WHERE id = $4) THEN NULL
                   WHEN (SELECT ids FROM unknown) IS NOT NULL THEN (SELECT ids FROM unknown)
                   ELSE (SELECT ids FROM short) END AS short";

    fn key(&self, request: &PacketRequest) -> Result<Key, ReserveError> {
        let invalid = |why: String| Err(ReserveError::Invalid(why));
        if request.lines.is_empty() || request.lines.len() > MAX_LINES {
            return invalid(format!(
                "{} lines; a basket has 1 to {MAX_LINES}",
                request.lines.len()
            ));
        }
        let mut seen = HashSet::new();
        let mut key = Key {
            hub: request.hub_id.0,
            ..Key::default()
        };
        for line in &request.lines {
            if !seen.insert(line.food_id) {
                return invalid(format!("food {} is on two lines", line.food_id));
            }
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                return invalid(format!(
                    "quantity {} of food {}; a line asks for 1 to {MAX_QUANTITY}",
                    line.quantity, line.food_id
                ));
            }
            key.kinds.push(line.food_id.0);
            // At most MAX_QUANTITY, so it fits.
            key.quantities
                .push(i32::try_from(line.quantity).unwrap_or(i32::MAX));
        }
        Ok(key)
    }
}
