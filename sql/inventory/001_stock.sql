-- Inventory owns products, their stock and one reservation per order.
-- Stock is conserved: initial + restocked = available + reserved + sold.

CREATE TABLE products (
    product_id  integer PRIMARY KEY,
    name        text          NOT NULL,
    description text          NOT NULL,
    price       numeric(10,2) NOT NULL,
    available   integer       NOT NULL CHECK (available >= 0),
    reserved    integer       NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold        integer       NOT NULL DEFAULT 0 CHECK (sold >= 0),
    initial     integer       NOT NULL,
    restocked   integer       NOT NULL DEFAULT 0 CHECK (restocked >= 0),
    version     bigint        NOT NULL DEFAULT 1,
    CHECK (initial + restocked = available + reserved + sold)
);

CREATE TABLE reservations (
    order_id   bigint      PRIMARY KEY,
    product_id integer     NOT NULL,
    quantity   integer     NOT NULL CHECK (quantity > 0),
    status     text        NOT NULL CHECK (status IN ('reserved', 'rejected', 'released', 'committed')),
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO products (product_id, name, description, price, available, initial)
VALUES (1, 'Premium Quality Widget', 'Enhance your productivity with our top-rated widgets!',
        99.99, 100, 100);

-- Announce the seeded product, so readers (the api read model) learn of it
-- from the topic alone.
INSERT INTO outbox (topic, msg_key, msg_id, msg_type, traceparent, value)
SELECT 'inventory.events', 'product-1', e.id, 'product_updated',
       '00-' || md5(random()::text) || '-' || substr(md5(random()::text), 1, 16) || '-01',
       json_build_object(
           'id', e.id, 'type', 'product_updated', 'version', 1, 'saga_id', 'product-1',
           'causation_id', NULL, 'correlation_id', 'product-1',
           'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'producer', 'inventory',
           'payload', json_build_object(
               'product_id', p.product_id, 'product', p.name, 'description', p.description,
               'price', p.price::text, 'inventory', p.available, 'reserved', p.reserved,
               'sold', p.sold, 'initial', p.initial, 'restocked', p.restocked,
               'version', p.version))::text
FROM products p, (SELECT gen_random_uuid() AS id) e
WHERE p.product_id = 1;
