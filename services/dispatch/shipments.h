/*
 * shipments.h - dispatch's handler (start a shipment) and its ticker job
 * (advance due shipments one step each, durably).
 */
#ifndef DISPATCH_SHIPMENTS_H
#define DISPATCH_SHIPMENTS_H

#include "consumer.h"

struct shipments_config {
    long steps;       /* steps per shipment (DISPATCH_STEPS) */
    long interval_ms; /* time between two steps (DISPATCH_INTERVAL_MS) */
};

/* The message types shipments_handle acts on; the consumer acknowledges others
 * without a transaction. */
extern const char *const shipments_handled_types[];

/* consumer_handler_fn for dispatch.commands; arg is a struct shipments_config. */
int shipments_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                     size_t errlen);

/* ticker_fn: advances every due shipment by one step; arg as above. */
int shipments_tick(PGconn *conn, void *arg);

#endif
