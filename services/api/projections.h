/*
 * projections.h - builds the api read model from checkout.events,
 * inventory.events and dispatch.events.
 */
#ifndef API_PROJECTIONS_H
#define API_PROJECTIONS_H

#include "consumer.h"

/* The message types projections_handle acts on; the consumer acknowledges others
 * without a transaction. */
extern const char *const projections_handled_types[];

/*
 * What the api's waits read from an order of the read model, as one text:
 * "payment_id|order_status|order_id|reason" (payment_id and reason empty
 * when NULL). ORDER_ANSWER_SQL computes it from a row of orders; the order
 * projection puts the same text in the order's change notification, so a
 * woken request need not read the row.
 */
#define ORDER_ANSWER_SQL                                                                           \
    "coalesce(payment_id, '') || '|' || order_status || '|' || order_id || '|' || "                \
    "coalesce(reason, '')"

/* What a restock call's wait reads once inventory has applied its command:
 * RESTOCK_ACK_SQL finds it in restock_acks, and the ack's projection puts it
 * in the "restock:ID" notification. */
#define RESTOCK_APPLIED "applied"
#define RESTOCK_ACK_SQL "SELECT '" RESTOCK_APPLIED "' FROM restock_acks WHERE restock_id = $1::uuid"

/* consumer_handler_fn for the topics above. */
int projections_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                       size_t errlen);

#endif
