-- Commands that were delivered before without being settled (the process that had them died)
-- are handled one at a time, each attempt counted here first. A message that keeps ending the
-- process while it is handled alone is the one that crashes it: after a few attempts it is
-- parked, before the broker's delivery limit parks the innocent messages that were unacked
-- beside it at each crash. A row is deleted once its message is handled.
CREATE TABLE message_attempts (
    message_id      UUID PRIMARY KEY,
    attempts        INT NOT NULL CHECK (attempts >= 1),
    last_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
