//! The barrier against late commands: a release that arrives before its reserve.

use protocol::command::{
    AgentRequest, Command, PacketLine, PacketRequest, Release, ReleaseReason, ReleaseReply, Reply,
    ReserveReply,
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
