-- Definition version 2 of the saga opens the payment while the stock is
-- being reserved. The payment's id is kept here until the stock is reserved;
-- only then is it written on the order, which offers it to the customer
-- (an out-of-stock order never shows a payment id).
ALTER TABLE sagas ADD COLUMN payment_id text;
