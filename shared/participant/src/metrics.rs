//! The metrics a participant records, each name spelled once, and their descriptions.

use ::metrics::{Unit, describe_counter, describe_histogram};
use protocol::command::{AssignReply, CancelReply, ReleaseReply, Reply, ReserveReply};
use protocol::topology::Participant;

/// Counter, by `participant`, `operation` and `outcome`: commands handled (a redelivered command
/// answered from its barrier row counts again).
pub const COMMANDS: &str = "participant_commands_total";
/// Histogram, by `participant` and `operation`: from a command's arrival to its reply.
pub const COMMAND_SECONDS: &str = "participant_command_seconds";
/// Counter, by `participant` and `via` (`timer`, `sweep`): reservations freed because they expired.
pub const RESERVATIONS_EXPIRED: &str = "reservations_expired_total";

/// Counter: reserves of a group that the group's one statement did not take (short, busy, or
/// after an item that another reserve of the group picked too), run again on their own
/// statement.
pub const RESERVES_ALONE: &str = "participant_reserves_alone_total";

/// Describes every metric of a participant, and registers the counters of `participant` whose
/// labels are known in advance at zero.
pub fn describe(participant: Participant) {
    describe_counter!(
        COMMANDS,
        Unit::Count,
        "Commands handled, by participant, operation and outcome (reserved, busy, unavailable, aborted, assigned, refused, released, cancelled, cancel_refused)."
    );
    describe_histogram!(
        COMMAND_SECONDS,
        Unit::Seconds,
        "Time from a command's arrival to its reply, by participant and operation."
    );
    describe_counter!(
        RESERVATIONS_EXPIRED,
        Unit::Count,
        "Reservations freed because they expired before they were assigned or released, by participant and via (timer: their expiry timer; sweep: the periodic sweep)."
    );
    describe_counter!(
        RESERVES_ALONE,
        Unit::Count,
        "Reserves of a group that the group's one statement did not take (short, busy, or after an item that another reserve of the group picked too), run again on their own statement."
    );
    ::metrics::counter!(RESERVES_ALONE).increment(0);
    for via in ["timer", "sweep"] {
        ::metrics::counter!(
            RESERVATIONS_EXPIRED,
            "participant" => participant.as_str(),
            "via" => via,
        )
        .increment(0);
    }
}

/// The `outcome` label of a reply.
pub(crate) fn outcome(reply: &Reply) -> &'static str {
    match reply {
        Reply::ReserveReply(ReserveReply::Reserved { .. }) => "reserved",
        Reply::ReserveReply(ReserveReply::Busy { .. }) => "busy",
        Reply::ReserveReply(ReserveReply::Unavailable { .. }) => "unavailable",
        Reply::ReserveReply(ReserveReply::Aborted) => "aborted",
        Reply::AssignReply(AssignReply::Assigned { .. }) => "assigned",
        Reply::AssignReply(AssignReply::Refused { .. }) => "refused",
        Reply::ReleaseReply(ReleaseReply::Released { .. }) => "released",
        Reply::CancelReply(CancelReply::Cancelled { .. }) => "cancelled",
        Reply::CancelReply(CancelReply::Refused { .. }) => "cancel_refused",
    }
}
