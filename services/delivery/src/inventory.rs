//! How delivery picks an agent for a reservation.

use chrono::{DateTime, Utc};
use participant::{Hold, Inventory, ItemTable, ReserveError};
use protocol::command::{AgentRequest, ReserveReply, Shortage};
use protocol::ids::{AgentId, ItemId};
use protocol::topology::Participant;
use sqlx::PgConnection;

/// Delivery's items: agents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Agents;

impl Inventory for Agents {
    type Request = AgentRequest;

    const PARTICIPANT: Participant = Participant::Delivery;

    const TABLE: ItemTable = ItemTable { name: "agents" };

    async fn reserve(
        &self,
        tx: &mut PgConnection,
        hold: Hold,
        _request: &AgentRequest,
    ) -> Result<ReserveReply, ReserveError> {
        if let Some((agent, until)) = take_agent(tx, hold).await? {
            return Ok(ReserveReply::Reserved {
                items: vec![ItemId::from(agent)],
                expires_at: until,
            });
        }
        // Nothing free. "All held for now" (an agent locked by a concurrent reserve, or reserved
        // by an unfinished transaction) is worth a retry; "all assigned" is final.
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM agents WHERE state = 'available')
                    OR EXISTS (SELECT 1 FROM agents WHERE state = 'reserved')",
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(if held {
            ReserveReply::Busy
        } else {
            ReserveReply::Unavailable {
                reason: Shortage::AgentUnavailable,
            }
        })
    }
}

/// Takes the first available agent, or else one whose reservation has expired, skipping agents
/// that concurrent transactions have locked.
async fn take_agent(
    tx: &mut PgConnection,
    hold: Hold,
) -> Result<Option<(AgentId, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE agents
         SET state = 'reserved', txn_id = $1, order_id = $2, reserved_until = now() + $3,
             updated_at = now()
         WHERE id = COALESCE(
             (SELECT id FROM agents
              WHERE state = 'available'
              ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED),
             (SELECT id FROM agents
              WHERE state = 'reserved' AND reserved_until < now()
              ORDER BY reserved_until LIMIT 1 FOR UPDATE SKIP LOCKED))
         RETURNING id, reserved_until",
    )
    .bind(hold.txn_id)
    .bind(hold.order_id)
    .bind(hold.ttl)
    .fetch_optional(&mut *tx)
    .await
}
