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

/* consumer_handler_fn for the topics above. */
int projections_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                       size_t errlen);

#endif
