/*
 * contracts.h - the message contracts between the widget-store services:
 * topic names, message types and the order status numbers. This is the one
 * place they are spelled; every service includes it and nothing else from
 * another service. Payload fields are listed next to each type.
 *
 * Every saga message is keyed (Kafka key and envelope saga_id) by the saga id,
 * which is the checkout's idempotency key, so one saga's messages stay in
 * order within a topic.
 */
#ifndef SERVICES_CONTRACTS_H
#define SERVICES_CONTRACTS_H

/* Topics. Each also has a "<topic>.dlq" dead-letter topic. */
#define TOPIC_CHECKOUT_COMMANDS  "checkout.commands"
#define TOPIC_CHECKOUT_EVENTS    "checkout.events"
#define TOPIC_INVENTORY_COMMANDS "inventory.commands"
#define TOPIC_INVENTORY_EVENTS   "inventory.events"
#define TOPIC_PAYMENT_COMMANDS   "payment.commands"
#define TOPIC_PAYMENT_EVENTS     "payment.events"
#define TOPIC_DISPATCH_COMMANDS  "dispatch.commands"
#define TOPIC_DISPATCH_EVENTS    "dispatch.events"
#define TOPIC_PARTITIONS         4

/* checkout.commands (from api) */
#define MSG_CHECKOUT_REQUESTED "checkout_requested" /* idempotency_key, product_id */

/* checkout.events (from checkout): a full snapshot of one order after every
 * change; version grows by one per change so readers ignore stale copies. */
#define MSG_ORDER_UPDATED "order_updated"
/* order_id, idempotency_key, product_id, order_status, payment_id|null,
 * reason|null, last_update_time, version */

/* inventory.commands (from checkout; restock from api) */
#define MSG_RESERVE_STOCK "reserve_stock" /* order_id, product_id, quantity */
#define MSG_RELEASE_STOCK "release_stock" /* order_id */
#define MSG_COMMIT_STOCK  "commit_stock"  /* order_id */
#define MSG_RESTOCK       "restock"       /* product_id, inventory (the new level), restock_id */

/* inventory.events (from inventory) */
#define MSG_STOCK_RESERVED  "stock_reserved"  /* order_id, unit_price (string), quantity */
#define MSG_STOCK_REJECTED  "stock_rejected"  /* order_id, reason */
#define MSG_STOCK_RELEASED  "stock_released"  /* order_id */
#define MSG_STOCK_COMMITTED "stock_committed" /* order_id */
#define MSG_PRODUCT_UPDATED "product_updated"
/* product_id, product, description, price (string), inventory, reserved,
 * sold, initial, restocked, version; and restock_id when answering a restock */

/* payment.commands (create and cancel from checkout; provider_result from
 * api's webhook) */
#define MSG_CREATE_PAYMENT  "create_payment"  /* order_id, amount (string) */
#define MSG_CANCEL_PAYMENT  "cancel_payment"  /* order_id, payment_id */
#define MSG_PROVIDER_RESULT "provider_result" /* payment_id, status ("paid" or other) */

/* payment.events (from payment) */
#define MSG_PAYMENT_CREATED   "payment_created"   /* order_id, payment_id */
#define MSG_PAYMENT_SUCCEEDED "payment_succeeded" /* order_id, payment_id */
#define MSG_PAYMENT_FAILED    "payment_failed"    /* order_id, payment_id */
/* Reply to cancel_payment: the customer is not charged. outcome is
 * "cancelled" (was pending), "not_charged" (had failed) or "refunded" (had
 * been captured). */
#define MSG_PAYMENT_VOIDED "payment_voided" /* order_id, payment_id, outcome */
/* A success reported after the session was cancelled: captured and refunded. */
#define MSG_PAYMENT_REFUNDED "payment_refunded" /* order_id, payment_id */

/* dispatch.commands (from checkout) */
#define MSG_START_DISPATCH "start_dispatch" /* order_id */

/* dispatch.events (from dispatch) */
#define MSG_DISPATCH_PROGRESS  "dispatch_progress"  /* order_id, progress_remaining */
#define MSG_DISPATCH_COMPLETED "dispatch_completed" /* order_id */

/* Order status numbers, as in the DBOS widget store. */
#define ORDER_CANCELLED  (-1)
#define ORDER_PENDING    0
#define ORDER_DISPATCHED 1
#define ORDER_PAID       2

#define WIDGET_PRODUCT_ID      1
#define DISPATCH_STEPS_DEFAULT 10

#endif
