/*
 * stock.h - inventory's message handler: reservations, releases, sales and
 * restocks of products, one reservation per order, stock conserved.
 */
#ifndef INVENTORY_STOCK_H
#define INVENTORY_STOCK_H

#include "consumer.h"

/* The message types stock_handle acts on; the consumer acknowledges others
 * without a transaction. */
extern const char *const stock_handled_types[];

/* consumer_handler_fn for inventory.commands. */
int stock_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                 size_t errlen);

#endif
