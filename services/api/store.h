/*
 * store.h - the DBOS widget-store REST endpoints, answered from the read
 * model; checkout, webhook and restock send a command through the outbox and
 * then wait, under a deadline and without holding a thread, for the read
 * model to show the answer (which any replica's consumer may have written),
 * resumed by its notifications.
 */
#ifndef API_STORE_H
#define API_STORE_H

#include <stdatomic.h>
#include <stddef.h>

#include "db_pool.h"
#include "waiters.h"

struct store {
    struct db_pool *pool;
    long wait_ms;        /* deadline of checkout, webhook and restock waits */
    long recheck_ms;     /* fallback re-check interval while waiting */
    long restock_level;  /* POST /restock sets the inventory to this */
    long dispatch_steps; /* progress_remaining of an order not in dispatch yet */
    long max_pending;    /* commands waiting for their answer at once, at most */
    atomic_long pending;
    struct waiters *waiters;
};

struct store_reply {
    int status;
    const char *content_type;
    char *body; /* malloc'd; owned by the caller after the call */
};

/*
 * A checkout, webhook or restock call: it sends its command, then waits for
 * the read model to show the answer without holding a thread. The HTTP
 * layer sets suspend, resume and arg (its connection) before the call;
 * waiter_park (waiters.h) calls them when the call parks and when it should
 * go on. The rest is the store's.
 */
struct store_call {
    void (*suspend)(void *arg), (*resume)(void *arg);
    void *arg;
    int kind;                   /* what is being waited for */
    int check_first;            /* read the row before the first park */
    double deadline_ms;         /* monotonic: answer 504 after this */
    char param[WAITER_KEY_MAX]; /* the key, payment id or restock id waited for */
    struct waiter waiter;
};

/* What became of a call: answered (the reply is written and the call is
 * over); parked (suspend was called; once resume is, call store_resume); or,
 * from store_resume without may_query, stopped where it must read the
 * database (call store_resume again, where that may wait). */
enum store_step { STORE_REPLIED, STORE_PARKED, STORE_NEEDS_DB };

void store_product(struct store *store, struct store_reply *reply);
void store_orders(struct store *store, struct store_reply *reply);
void store_order(struct store *store, const char *id_text, struct store_reply *reply);
/* store_order()'s answers to a malformed id (400) and to one of no order
 * (404), also given by the router to ids it does not pass on. */
#define STORE_ORDER_ID_INVALID "Invalid order ID: expected digits only\n"
#define STORE_ORDER_NOT_FOUND  "Order not found\n"
enum store_step store_restock(struct store *store, struct store_call *call,
                              struct store_reply *reply);
enum store_step store_checkout(struct store *store, struct store_call *call, const char *key,
                               struct store_reply *reply);
enum store_step store_webhook(struct store *store, struct store_call *call, const char *payment_id,
                              const char *status, struct store_reply *reply);

/* Goes on with a parked call after its resume was called. Unless may_query,
 * it only uses the answer its notification carried, and returns
 * STORE_NEEDS_DB when it must read the row instead. The other store_
 * functions may all wait on the database. */
enum store_step store_resume(struct store *store, struct store_call *call, int may_query,
                             struct store_reply *reply);

/* Ends a parked call whose request went away without its answer (its
 * connection closed after resume, before store_resume). */
void store_abandon(struct store *store, struct store_call *call);

/* Input checks, exposed for unit tests. Return 1 when acceptable. An order
 * id is any run of digits: 0, and one past bigint (read as LLONG_MAX), are
 * well formed and name no order (404, not 400). */
int store_valid_key(const char *key);
int store_valid_status(const char *status);
int store_parse_order_id(const char *text, long long *out);

#endif
