/*
 * sessions.h - payment's message handler: payment sessions with ids,
 * provider results (first terminal one wins), cancellations and refunds.
 */
#ifndef PAYMENT_SESSIONS_H
#define PAYMENT_SESSIONS_H

#include "consumer.h"

/* The message types sessions_handle acts on; the consumer acknowledges others
 * without a transaction. */
extern const char *const sessions_handled_types[];

/* consumer_handler_fn for payment.commands. */
int sessions_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                    size_t errlen);

#endif
