-- A payment timeout no longer cancels the order at once: the saga first asks
-- payment to cancel the payment unless it is paid (state expiring_payment),
-- so a success already on its way is kept rather than refunded.

ALTER TABLE sagas
    DROP CONSTRAINT sagas_state_check,
    ADD CONSTRAINT sagas_state_check CHECK (state IN (
        'reserving', 'opening_payment', 'awaiting_payment', 'expiring_payment',
        'dispatching', 'completed', 'compensating', 'cancelled',
        'compensation_failed'));
