-- The api's read model, built only from the topics (it can be dropped and
-- rebuilt by replaying them), and its HTTP idempotency records.

CREATE TABLE products (
    product_id  integer       PRIMARY KEY,
    product     text          NOT NULL,
    description text          NOT NULL,
    price       numeric(10,2) NOT NULL,
    inventory   integer       NOT NULL,
    version     bigint        NOT NULL
);

-- One row per order, from checkout's order_updated snapshots; a snapshot
-- only replaces an older version.
CREATE TABLE orders (
    order_id         bigint      PRIMARY KEY,
    idempotency_key  text        NOT NULL UNIQUE,
    product_id       integer     NOT NULL,
    order_status     integer     NOT NULL,
    payment_id       text        UNIQUE,
    reason           text,
    last_update_time timestamptz NOT NULL,
    version          bigint      NOT NULL
);

CREATE INDEX orders_newest ON orders (order_id DESC);

-- Dispatch progress, kept apart because it may arrive before the order.
CREATE TABLE order_progress (
    order_id           bigint  PRIMARY KEY,
    progress_remaining integer NOT NULL
);

-- Checkout keys already accepted, so a repeated POST sends no new command.
CREATE TABLE checkout_requests (
    idempotency_key text        PRIMARY KEY,
    requested_at    timestamptz NOT NULL DEFAULT now()
);
