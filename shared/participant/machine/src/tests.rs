use protocol::command::{AssignRefusal, CancelRefusal, ReleaseReason, Shortage};
use protocol::ids::{ItemId, OrderId, TxnId};
use uuid::Uuid;

use super::{Command, ItemState, Items, NotPickedUp, Operation, Outcome};

fn txn(n: u128) -> TxnId {
    TxnId(Uuid::from_u128(n))
}

fn order(n: u128) -> OrderId {
    OrderId(Uuid::from_u128(n))
}

fn reserve(t: u128, wanted: usize) -> Command {
    Command::Reserve {
        txn: txn(t),
        order: order(t),
        wanted,
    }
}

fn assign(t: u128, items: &[i64]) -> Command {
    Command::Assign {
        txn: txn(t),
        order: order(t),
        items: items.iter().copied().map(ItemId).collect(),
    }
}

fn release(t: u128, reason: ReleaseReason) -> Command {
    Command::Release {
        txn: txn(t),
        reason,
    }
}

fn ids(items: &[i64]) -> Vec<ItemId> {
    items.iter().copied().map(ItemId).collect()
}

#[test]
fn a_reserve_takes_all_it_wants_or_nothing() {
    let mut items = Items::new(2);
    assert_eq!(
        items.apply(&reserve(1, 3)),
        Outcome::Unavailable(Shortage::FoodUnavailable)
    );
    assert!(items.items().all(|(_, s)| s == ItemState::Available));
    assert_eq!(items.apply(&reserve(2, 2)), Outcome::Reserved(ids(&[1, 2])));
}

#[test]
fn items_held_by_others_for_now_make_a_reserve_busy_and_expired_ones_are_taken() {
    let mut items = Items::new(1);
    items.apply(&reserve(1, 1));
    assert_eq!(items.apply(&reserve(2, 1)), Outcome::Busy);
    assert!(items.expire(ItemId(1)));
    assert_eq!(items.apply(&reserve(3, 1)), Outcome::Reserved(ids(&[1])));
    assert_eq!(
        items.apply(&assign(1, &[1])),
        Outcome::AssignRefused(AssignRefusal::Expired)
    );
}

#[test]
fn a_repeated_command_gets_the_recorded_reply_and_changes_nothing() {
    let mut items = Items::new(2);
    let first = items.apply(&reserve(1, 1));
    let after_first = items.clone();
    assert_eq!(items.apply(&reserve(1, 1)), first);
    assert_eq!(items, after_first);
}

#[test]
fn a_reserve_after_its_release_holds_nothing_and_its_assign_is_refused() {
    let mut items = Items::new(1);
    assert_eq!(
        items.apply(&release(1, ReleaseReason::Abort)),
        Outcome::Released(vec![])
    );
    assert_eq!(items.apply(&reserve(1, 1)), Outcome::Aborted);
    assert_eq!(
        items.apply(&assign(1, &[1])),
        Outcome::AssignRefused(AssignRefusal::Released)
    );
    assert_eq!(items.state(ItemId(1)), Some(ItemState::Available));
}

#[test]
fn an_abort_never_undoes_an_assignment_but_compensation_does() {
    let mut items = Items::new(1);
    items.apply(&reserve(1, 1));
    assert_eq!(items.apply(&assign(1, &[1])), Outcome::Assigned(ids(&[1])));
    assert_eq!(
        items.apply(&release(1, ReleaseReason::Abort)),
        Outcome::Released(vec![])
    );
    assert!(matches!(
        items.state(ItemId(1)),
        Some(ItemState::Assigned { .. })
    ));
    // Compensation has its own barrier row: the abort before it does not stand in its way.
    assert_eq!(
        items.apply(&release(1, ReleaseReason::Compensate)),
        Outcome::Released(ids(&[1]))
    );
    assert_eq!(items.state(ItemId(1)), Some(ItemState::Available));
    assert!(items.recorded(txn(1), Operation::Release).is_some());
    assert!(items.recorded(txn(1), Operation::Compensate).is_some());
}

#[test]
fn a_release_frees_what_is_reserved() {
    let mut items = Items::new(2);
    items.apply(&reserve(1, 2));
    assert_eq!(
        items.apply(&release(1, ReleaseReason::Retry)),
        Outcome::Released(ids(&[1, 2]))
    );
    assert!(items.items().all(|(_, s)| s == ItemState::Available));
}

#[test]
fn a_cancel_frees_the_assignment_unless_the_rider_has_it() {
    let mut items = Items::new(2);
    items.apply(&reserve(1, 1));
    items.apply(&assign(1, &[1]));
    items.apply(&reserve(2, 1));
    items.apply(&assign(2, &[2]));
    assert!(items.mark_placed(order(2)));
    assert_eq!(items.pick_up(order(2)), Ok(ItemId(2)));
    assert_eq!(
        items.apply(&Command::Cancel { txn: txn(2) }),
        Outcome::CancelRefused(CancelRefusal::PickedUp)
    );
    assert_eq!(
        items.apply(&Command::Cancel { txn: txn(1) }),
        Outcome::Cancelled(ids(&[1]))
    );
    // Compensation does not take an agent from its rider either.
    assert_eq!(
        items.apply(&release(2, ReleaseReason::Compensate)),
        Outcome::Released(vec![])
    );
    assert_eq!(items.deliver(order(2)), Some(ItemId(2)));
    assert_eq!(items.state(ItemId(2)), Some(ItemState::Available));
}

#[test]
fn a_pick_up_waits_for_the_placement_and_an_assigned_agent() {
    let mut items = Items::new(1);
    assert_eq!(items.pick_up(order(1)), Err(NotPickedUp::NotAssigned));
    items.apply(&reserve(1, 1));
    items.apply(&assign(1, &[1]));
    assert_eq!(items.pick_up(order(1)), Err(NotPickedUp::NotPlacedYet));
    assert!(items.mark_placed(order(1)));
    assert_eq!(items.pick_up(order(1)), Ok(ItemId(1)));
    // Reported twice: the agent is already out.
    assert_eq!(items.pick_up(order(1)), Err(NotPickedUp::NotAssigned));
}

#[test]
fn a_placement_seen_after_a_cancel_marks_nothing() {
    let mut items = Items::new(1);
    items.apply(&reserve(1, 1));
    items.apply(&assign(1, &[1]));
    items.apply(&Command::Cancel { txn: txn(1) });
    assert!(!items.mark_placed(order(1)));
    assert_eq!(items.pick_up(order(1)), Err(NotPickedUp::NotAssigned));
}

#[test]
fn a_placement_seen_while_the_agent_is_only_reserved_marks_nothing() {
    let mut items = Items::new(1);
    items.apply(&reserve(1, 1));
    assert!(!items.mark_placed(order(1)));
    items.apply(&assign(1, &[1]));
    assert_eq!(items.pick_up(order(1)), Err(NotPickedUp::NotPlacedYet));
}

#[test]
fn only_an_expired_reservation_is_swept() {
    let mut items = Items::new(1);
    items.apply(&reserve(1, 1));
    assert!(!items.sweep(ItemId(1)));
    assert!(items.expire(ItemId(1)));
    assert!(items.sweep(ItemId(1)));
    assert_eq!(items.state(ItemId(1)), Some(ItemState::Available));
}
