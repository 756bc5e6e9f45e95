//! The barrier against late commands: a release that arrives before its reserve, and an abort
//! that arrives after the assign.

use protocol::command::{
    AgentRequest, Assign, AssignReply, Command, PacketLine, PacketRequest, Release, ReleaseReason,
    ReleaseReply, Reply, ReserveReply,
};
use protocol::envelope::TxnEnvelope;
use protocol::ids::{FoodId, HubId, OrderId, TxnId};
use protocol::topology::Participant;
use serde::Serialize;

use crate::helpers::TestSystem;
use crate::helpers::client::CommandClient;

async fn release_then_reserve<R: Serialize + Clone>(
    client: &CommandClient,
    to: Participant,
    reserve: R,
) {
    let (order, txn) = (OrderId::new(), TxnId::new());
    let release: Command<R> = Command::Release(Release {
        reason: ReleaseReason::Abort,
    });
    let reply = client
        .call(to, &TxnEnvelope::txn(order, txn, release))
        .await;
    assert_eq!(
        reply,
        Reply::ReleaseReply(ReleaseReply::Released { items: vec![] }),
        "an empty rollback"
    );
    let reply = client
        .call(to, &TxnEnvelope::txn(order, txn, Command::Reserve(reserve)))
        .await;
    assert_eq!(
        reply,
        Reply::ReserveReply(ReserveReply::Aborted),
        "the late reserve of a released transaction is refused"
    );
}

#[tokio::test]
async fn a_reserve_arriving_after_its_release_is_refused_and_holds_nothing() {
    let system = TestSystem::start().await;
    let food = system.create_food("Rasam", 3).await;
    system.create_agents(3).await;
    let client = CommandClient::connect(&system.infra).await;

    let packets = PacketRequest {
        hub_id: HubId::DEFAULT,
        lines: vec![PacketLine::one(FoodId(food))],
    };
    release_then_reserve(&client, Participant::Store, packets).await;
    release_then_reserve(&client, Participant::Delivery, AgentRequest::default()).await;

    assert_eq!(system.infra.reserved_counts().await, (0, 0));
    assert_eq!(system.food(food).await["available"], 3);
    assert_eq!(system.agents_summary().await["available"], 3);
}

/// Reserves and assigns for a new transaction, then releases it for an abort and then for
/// compensation, checking after the abort that the item is `still_assigned`.
async fn assign_then_abort_then_compensate<R: Serialize + Clone>(
    client: &CommandClient,
    to: Participant,
    reserve: R,
    still_assigned: impl AsyncFn() -> bool,
) {
    let (order, txn) = (OrderId::new(), TxnId::new());
    let call = async |command: Command<R>| {
        client
            .call(to, &TxnEnvelope::txn(order, txn, command))
            .await
    };
    let Reply::ReserveReply(ReserveReply::Reserved { items, .. }) =
        call(Command::Reserve(reserve)).await
    else {
        panic!("{to}: the reserve should hold an item");
    };
    let assigned = call(Command::Assign(Assign {
        items: items.clone(),
    }))
    .await;
    assert_eq!(
        assigned,
        Reply::AssignReply(AssignReply::Assigned {
            items: items.clone()
        })
    );
    let release = |reason| Command::Release(Release { reason });
    assert_eq!(
        call(release(ReleaseReason::Abort)).await,
        Reply::ReleaseReply(ReleaseReply::Released { items: vec![] }),
        "{to}: an abort frees only what is reserved"
    );
    assert!(
        still_assigned().await,
        "{to}: the assignment outlives the abort"
    );
    assert_eq!(
        call(release(ReleaseReason::Compensate)).await,
        Reply::ReleaseReply(ReleaseReply::Released { items }),
        "{to}: compensation undoes the assignment, even after an abort"
    );
}

/// Hole 3 of the model's counterexamples: a driver that recovered a decided order assigns it
/// after another driver sent an abort for its transaction (the first record's answer was lost).
/// The abort, applied after the assign, must not free items of an order that ends placed.
#[tokio::test]
async fn an_abort_applied_after_the_assign_frees_nothing_and_compensation_still_does() {
    let system = TestSystem::start().await;
    let food = system.create_food("Appam", 1).await;
    system.create_agents(1).await;
    let client = CommandClient::connect(&system.infra).await;

    let packets = PacketRequest {
        hub_id: HubId::DEFAULT,
        lines: vec![PacketLine::one(FoodId(food))],
    };
    assign_then_abort_then_compensate(&client, Participant::Store, packets, async || {
        system.food(food).await["assigned"] == 1
    })
    .await;
    assign_then_abort_then_compensate(
        &client,
        Participant::Delivery,
        AgentRequest::default(),
        async || system.agents_summary().await["assigned"] == 1,
    )
    .await;

    assert_eq!(system.food(food).await["available"], 1);
    assert_eq!(system.agents_summary().await["available"], 1);
}
