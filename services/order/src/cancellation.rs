//! Cancelling a placed order (`POST /orders/{id}/cancel`): record the intent (`cancelling`, with
//! a lease, so that recovery finishes it after a crash), drive it, and answer with the order as
//! recorded when the cancel ended, or when the response budget ran out.
//!
//! What a cancel of an order in each state does:
//! - `placed`: the cancel runs (delivery decides: it is refused if the agent has picked the
//!   order up);
//! - `cancelling`: the cancel under way is awaited, as the first request awaits it;
//! - `cancelled`: the same answer again;
//! - `picked_up`, `delivered`: refused, `already_picked_up`;
//! - `not_placed`: refused, `not_placed` (nothing is held for it);
//! - still being placed (`reserving`, `assigning`, `compensating`): refused, `not_placed_yet`,
//!   and nothing changes; placement ends within the order's deadline (plus phase 2), after which
//!   the customer can cancel a placed order.

use std::sync::Arc;

use protocol::ids::OrderId;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, info};

use crate::coordinator::Coordinator;
use crate::machine::rules::Driving;
use crate::machine::{self, Event, Order, OrderState, Writer};
use crate::participants::order_span;
use crate::phase1::Phase1;
use crate::repo::{self, LeaseToken, Recorded, RepoError};

/// Why a cancel got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such order for this customer.
    #[error("no order {0} of this customer")]
    NotFound(OrderId),
    /// The order table failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl Coordinator {
    /// Cancels `customer_id`'s order `id` (any customer's for `None`: an operator) if it is
    /// placed, and returns the order as recorded when the cancel ended or the response budget ran
    /// out; any other order is returned as it is.
    pub async fn cancel_order(
        self: &Arc<Self>,
        id: OrderId,
        customer_id: Option<&str>,
    ) -> Result<Order, CancelError> {
        let answer_by = Instant::now() + self.settings.response_budget;
        let mut current = self.load_customers(id, customer_id).await?;
        loop {
            match current.state {
                OrderState::Placed => {}
                OrderState::Cancelling => return self.await_cancel(current, answer_by).await,
                _ => return Ok(current),
            }
            let token = LeaseToken::new();
            let now = service_kit::fault::now();
            let asked =
                machine::transition(&current, Some(Event::CancelAsked), Writer::Customer, now)
                    .map_err(|_| RepoError::Gone(id))?;
            let lease = self.settings.lease;
            match self.orders.record(&asked, token, lease, None).await? {
                Recorded::Written(cancelling) => {
                    return Ok(self.drive_cancel(cancelling, token, answer_by).await);
                }
                // Picked up, or cancelled by a concurrent request, meanwhile: answer from there.
                Recorded::KeyTaken(_) | Recorded::Changed(_) => {
                    current = self.load_customers(id, customer_id).await?;
                }
            }
        }
    }

    async fn load_customers(
        &self,
        id: OrderId,
        customer_id: Option<&str>,
    ) -> Result<Order, CancelError> {
        repo::load(self.pool(), id)
            .await?
            .filter(|order| customer_id.is_none_or(|c| order.customer_id == c))
            .ok_or(CancelError::NotFound(id))
    }

    /// Drives the cancel recorded just now, in a task of its own (the response budget does not
    /// cut it short), and waits for it until `answer_by`.
    async fn drive_cancel(
        self: &Arc<Self>,
        order: Order,
        token: LeaseToken,
        answer_by: Instant,
    ) -> Order {
        let span = order_span(&order);
        let (progress, mut latest) = watch::channel(order.clone());
        let this = Arc::clone(self);
        self.tracker.spawn(
            async move {
                info!("cancel asked");
                this.drive(
                    order,
                    token,
                    Driving::Fresh,
                    Phase1::until(Instant::now()),
                    Some(progress),
                )
                .await;
            }
            .instrument(span),
        );
        let _ = tokio::time::timeout_at(answer_by, latest.wait_for(|o| o.state.is_final())).await;
        latest.borrow().clone()
    }

    /// A cancel that another request started (or that recovery drives): polls the order until it
    /// is no longer cancelling, or `answer_by`.
    async fn await_cancel(
        &self,
        mut order: Order,
        answer_by: Instant,
    ) -> Result<Order, CancelError> {
        let mut pause = std::time::Duration::from_millis(10);
        while order.state == OrderState::Cancelling && Instant::now() + pause < answer_by {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
            order = repo::load(self.pool(), order.id)
                .await?
                .ok_or(CancelError::NotFound(order.id))?;
        }
        Ok(order)
    }
}
