-- Payment stands in for an external provider such as Stripe: one payment
-- session per order. The first terminal provider result wins; a success that
-- arrives after the session was cancelled is captured and refunded at once.

CREATE TABLE payments (
    payment_id      uuid          PRIMARY KEY,
    order_id        bigint        NOT NULL UNIQUE,
    saga_id         text          NOT NULL,
    amount          numeric(10,2) NOT NULL CHECK (amount >= 0),
    status          text          NOT NULL
                    CHECK (status IN ('pending', 'captured', 'failed', 'cancelled', 'refunded')),
    provider_result text,
    captured_at     timestamptz,
    refunded_at     timestamptz,
    created_at      timestamptz   NOT NULL DEFAULT now(),
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    -- Money moved only with a capture, and a refund only after one.
    CHECK (status <> 'captured' OR captured_at IS NOT NULL),
    CHECK (status <> 'refunded' OR (captured_at IS NOT NULL AND refunded_at IS NOT NULL))
);
