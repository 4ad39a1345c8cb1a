-- Messaging tables every service database holds: the transactional outbox
-- (rows written in the same transaction as the state change, published by
-- the relay) and the inbox (ids of messages already handled).

CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    topic       text        NOT NULL,
    msg_key     text        NOT NULL,
    msg_id      uuid        NOT NULL,
    msg_type    text        NOT NULL,
    traceparent text        NOT NULL,
    value       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One notification per inserting statement wakes the relay; NOTIFY is
-- transactional, so a rolled-back insert wakes nobody.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- message_id is the envelope id, or "topic/partition/offset" for a message
-- that could not be parsed at all.
CREATE TABLE IF NOT EXISTS inbox (
    message_id   text PRIMARY KEY,
    topic        text        NOT NULL,
    kafka_partition integer  NOT NULL,
    kafka_offset bigint      NOT NULL,
    outcome      text        NOT NULL DEFAULT 'handled',
    handled_at   timestamptz NOT NULL DEFAULT now()
);
