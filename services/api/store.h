/*
 * store.h - the DBOS widget-store REST endpoints, answered from the read
 * model; checkout, webhook and restock send a command through the outbox and
 * then wait, under a deadline, for the read model to show the answer (which
 * any replica's consumer may have written), woken by its notifications.
 */
#ifndef API_STORE_H
#define API_STORE_H

#include <stdatomic.h>
#include <stddef.h>

#include "db_pool.h"
#include "waiters.h"

struct store {
    struct db_pool *pool;
    long wait_ms;       /* deadline of checkout, webhook and restock waits */
    long recheck_ms;    /* fallback re-check interval while waiting */
    long restock_level; /* POST /restock sets the inventory to this */
    long max_pending;   /* commands waiting for their answer at once, at most */
    atomic_long pending;
    struct waiters *waiters;
};

struct store_reply {
    int status;
    const char *content_type;
    char *body; /* malloc'd; owned by the caller after the call */
};

void store_product(struct store *store, struct store_reply *reply);
void store_orders(struct store *store, struct store_reply *reply);
void store_order(struct store *store, const char *id_text, struct store_reply *reply);
void store_restock(struct store *store, struct store_reply *reply);
void store_checkout(struct store *store, const char *key, struct store_reply *reply);
void store_webhook(struct store *store, const char *payment_id, const char *status,
                   struct store_reply *reply);

/* Input checks, exposed for unit tests. Return 1 when acceptable. */
int store_valid_key(const char *key);
int store_valid_status(const char *status);
int store_parse_order_id(const char *text, long long *out);

#endif
