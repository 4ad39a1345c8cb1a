-- Dispatch owns shipments: one per paid order, advanced one durable step at
-- a time (progress_remaining counts down to 0, then the order is dispatched).

CREATE TABLE shipments (
    order_id           bigint      PRIMARY KEY,
    saga_id            text        NOT NULL,
    steps              integer     NOT NULL CHECK (steps > 0),
    progress_remaining integer     NOT NULL CHECK (progress_remaining >= 0),
    status             text        NOT NULL CHECK (status IN ('in_progress', 'dispatched')),
    next_step_at       timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    dispatched_at      timestamptz,
    CHECK (progress_remaining <= steps),
    CHECK ((status = 'dispatched') = (progress_remaining = 0))
);

CREATE INDEX shipments_due ON shipments (next_step_at) WHERE status = 'in_progress';
