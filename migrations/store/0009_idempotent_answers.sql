-- Answers to operators' calls that create (hubs, foods, packets, agents), kept with the change
-- they answer, so that a repeat with the same Idempotency-Key gets the same answer and creates
-- nothing (shared/service-kit/src/idempotency.rs). Pruned with the barrier rows.
CREATE TABLE idempotent_answers (
    key        text PRIMARY KEY,
    -- The route and body the key was first used for: another request with it is refused.
    request    text NOT NULL,
    answer     jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
