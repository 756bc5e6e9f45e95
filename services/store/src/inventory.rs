//! How the store picks a packet for a reservation.

use chrono::{DateTime, Utc};
use participant::{Hold, Inventory, ItemTable, ReserveError};
use protocol::command::{PacketRequest, ReserveReply, Shortage};
use protocol::ids::{FoodId, ItemId, PacketId};
use protocol::topology::Participant;
use sqlx::PgConnection;

/// The store's items: packets of foods.
#[derive(Clone, Copy, Debug, Default)]
pub struct Packets;

impl Inventory for Packets {
    type Request = PacketRequest;

    const PARTICIPANT: Participant = Participant::Store;

    const TABLE: ItemTable = ItemTable { name: "packets" };

    async fn reserve(
        &self,
        tx: &mut PgConnection,
        hold: Hold,
        request: &PacketRequest,
    ) -> Result<ReserveReply, ReserveError> {
        let [line] = request.lines.as_slice() else {
            return Err(ReserveError::Invalid(format!(
                "{} lines; the store reserves exactly one line per transaction",
                request.lines.len()
            )));
        };
        if let Some((packet, until)) = take_packet(tx, hold, line.food_id).await? {
            return Ok(ReserveReply::Reserved {
                items: vec![ItemId::from(packet)],
                expires_at: until,
            });
        }
        // Nothing free. Tell "none left" (final) from "all held for now" (retry): a packet that
        // is available but locked by a concurrent reserve, or reserved by a transaction that has
        // not finished, may still come back.
        let (known, held): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM foods WHERE id = $1),
                    EXISTS (SELECT 1 FROM packets WHERE food_id = $1 AND state = 'available')
                    OR EXISTS (SELECT 1 FROM packets WHERE food_id = $1 AND state = 'reserved')",
        )
        .bind(line.food_id)
        .fetch_one(&mut *tx)
        .await?;
        Ok(match (known, held) {
            (false, _) => ReserveReply::Unavailable {
                reason: Shortage::UnknownFood,
            },
            (true, true) => ReserveReply::Busy,
            (true, false) => ReserveReply::Unavailable {
                reason: Shortage::FoodUnavailable,
            },
        })
    }
}

/// Takes the first available packet of `food`, or else one whose reservation has expired,
/// skipping packets that concurrent transactions have locked. One statement; the second subquery
/// runs only when the first finds nothing.
async fn take_packet(
    tx: &mut PgConnection,
    hold: Hold,
    food: FoodId,
) -> Result<Option<(PacketId, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE packets
         SET state = 'reserved', txn_id = $1, order_id = $2, reserved_until = now() + $3,
             updated_at = now()
         WHERE id = COALESCE(
             (SELECT id FROM packets
              WHERE food_id = $4 AND state = 'available'
              ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED),
             (SELECT id FROM packets
              WHERE food_id = $4 AND state = 'reserved' AND reserved_until < now()
              ORDER BY reserved_until LIMIT 1 FOR UPDATE SKIP LOCKED))
         RETURNING id, reserved_until",
    )
    .bind(hold.txn_id)
    .bind(hold.order_id)
    .bind(hold.ttl)
    .bind(food)
    .fetch_optional(&mut *tx)
    .await
}
