-- Checkout owns orders, the saga instance of each (state, definition
-- version, step history, attempt counts) and the saga's durable timers.

CREATE TABLE orders (
    order_id         bigserial   PRIMARY KEY,
    idempotency_key  text        NOT NULL UNIQUE,
    product_id       integer     NOT NULL,
    quantity         integer     NOT NULL DEFAULT 1 CHECK (quantity > 0),
    order_status     integer     NOT NULL CHECK (order_status IN (-1, 0, 1, 2)),
    payment_id       text,
    amount           numeric(10,2),
    reason           text,
    version          bigint      NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_update_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sagas (
    saga_id               text        PRIMARY KEY,
    order_id              bigint      NOT NULL UNIQUE REFERENCES orders,
    definition_version    integer     NOT NULL,
    state                 text        NOT NULL CHECK (state IN (
                              'reserving', 'opening_payment', 'awaiting_payment',
                              'dispatching', 'completed', 'compensating', 'cancelled',
                              'compensation_failed')),
    stock_released        boolean     NOT NULL DEFAULT false,
    payment_voided        boolean     NOT NULL DEFAULT false,
    compensation_attempts integer     NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sagas_open ON sagas (state)
    WHERE state NOT IN ('completed', 'cancelled');

-- Every transition and every event a saga saw, in order.
CREATE TABLE saga_steps (
    step_id    bigserial   PRIMARY KEY,
    saga_id    text        NOT NULL REFERENCES sagas,
    event      text        NOT NULL,
    state_from text,
    state_to   text        NOT NULL,
    attempt    integer     NOT NULL DEFAULT 1,
    message_id text,
    detail     text,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX saga_steps_by_saga ON saga_steps (saga_id, step_id);

-- Durable timers: the payment timeout and compensation retries.
CREATE TABLE timers (
    saga_id text        NOT NULL REFERENCES sagas,
    kind    text        NOT NULL CHECK (kind IN ('payment_timeout', 'compensation_retry')),
    fire_at timestamptz NOT NULL,
    PRIMARY KEY (saga_id, kind)
);

CREATE INDEX timers_due ON timers (fire_at);
