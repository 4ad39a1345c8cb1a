/*
 * saga.c - checkout saga transitions. The saga row is locked (FOR UPDATE) for
 * the whole transaction, and each handler acts only from the states where its
 * event is expected, so duplicates, late and out-of-order events fall through
 * as recorded no-ops.
 */
#define _POSIX_C_SOURCE 200809L
#include "saga.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "contracts.h"
#include "crashpoint.h"
#include "db.h"
#include "log.h"
#include "payload.h"

const char *const saga_handled_types[] = {MSG_CHECKOUT_REQUESTED,
                                          MSG_STOCK_RESERVED,
                                          MSG_STOCK_REJECTED,
                                          MSG_STOCK_RELEASED,
                                          MSG_PAYMENT_CREATED,
                                          MSG_PAYMENT_SUCCEEDED,
                                          MSG_PAYMENT_FAILED,
                                          MSG_PAYMENT_VOIDED,
                                          MSG_PAYMENT_REFUNDED,
                                          MSG_DISPATCH_COMPLETED,
                                          NULL};

#define SERVICE "checkout"

struct saga {
    char saga_id[ENVELOPE_KEY_MAX];
    char order_id[32];
    char state[32];
    int stock_released;
    int payment_voided;
    int compensation_attempts;
    char payment_id[64]; /* offered on the order */
    char product_id[16];
    char quantity[16];
    int definition_version;
    char opened_payment_id[64]; /* version 2: opened, not yet offered */
    char amount[32];            /* the order's amount, "" until known */
    /* The order as loaded (locked with the saga), for its next snapshot. */
    char reason[256];
    int has_reason;
    long long order_version;
    char now[40]; /* the transaction's timestamp, as snapshots show it */
};

/* The transaction's timestamp as order snapshots carry it (RFC 3339, UTC). */
#define SNAPSHOT_NOW "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

#define SAGA_COLUMNS                                                                               \
    "SELECT s.saga_id, s.order_id, s.state, s.stock_released, s.payment_voided, "                  \
    "s.compensation_attempts, coalesce(o.payment_id, ''), o.product_id, o.quantity, "              \
    "o.reason, o.version, " SNAPSHOT_NOW ", s.definition_version, coalesce(s.payment_id, ''), "    \
    "coalesce(o.amount::text, '') FROM sagas s JOIN orders o USING (order_id) "

/*
 * Unit prices inventory last reserved at, by product. A checkout for a
 * product whose price is known here opens its payment while the stock is
 * being reserved (definition version 2). Only a hint: the reservation's price
 * is checked against the amount opened. Empty after a restart until the next
 * reservation, and forgotten when a reservation is refused, so that while a
 * product is sold out its checkouts reserve first and open no payment only
 * to void it; a product beyond PRICES_MAX is simply never known.
 */
#define PRICES_MAX 64
static struct {
    pthread_mutex_t lock;
    int count;
    char product_id[PRICES_MAX][16];
    char price[PRICES_MAX][32];
} known_prices = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The slot of product_id in known_prices, or count when it has none. The
 * caller holds the lock. */
static int price_slot(const char *product_id)
{
    int i = 0;

    while (i < known_prices.count && strcmp(known_prices.product_id[i], product_id) != 0)
        i++;
    return i;
}

static void price_learn(const char *product_id, const char *unit_price)
{
    pthread_mutex_lock(&known_prices.lock);
    int i = price_slot(product_id);
    if (i < PRICES_MAX) {
        snprintf(known_prices.product_id[i], sizeof(known_prices.product_id[i]), "%s", product_id);
        snprintf(known_prices.price[i], sizeof(known_prices.price[i]), "%s", unit_price);
        if (i == known_prices.count)
            known_prices.count++;
    }
    pthread_mutex_unlock(&known_prices.lock);
}

static void price_forget(const char *product_id)
{
    pthread_mutex_lock(&known_prices.lock);
    int i = price_slot(product_id), last = known_prices.count - 1;
    if (i <= last) {
        memcpy(known_prices.product_id[i], known_prices.product_id[last],
               sizeof(known_prices.product_id[i]));
        memcpy(known_prices.price[i], known_prices.price[last], sizeof(known_prices.price[i]));
        known_prices.count--;
    }
    pthread_mutex_unlock(&known_prices.lock);
}

/* Copies product_id's known price into price; returns 1, or 0 if unknown. */
static int price_known(const char *product_id, char *price, size_t cap)
{
    pthread_mutex_lock(&known_prices.lock);
    int i = price_slot(product_id), found = i < known_prices.count;
    if (found)
        snprintf(price, cap, "%s", known_prices.price[i]);
    pthread_mutex_unlock(&known_prices.lock);
    return found;
}

/* Loads and locks the saga of order_id (or, when order_id is NULL, of
 * saga_id), and its order: only a saga's handler changes its order, so the
 * next snapshot can be made from what is loaded here. Returns 1 when found,
 * 0 when not, -1 on failure. */
static int saga_load(PGconn *conn, const char *order_id, const char *saga_id, struct saga *saga)
{
    const char *params[] = {order_id ? order_id : saga_id};
    PGresult *res =
        db_query(conn, "saga load",
                 order_id ? SAGA_COLUMNS "WHERE s.order_id = $1::bigint FOR UPDATE OF s, o"
                          : SAGA_COLUMNS "WHERE s.saga_id = $1 FOR UPDATE OF s, o",
                 1, params);
    int found;

    if (res == NULL)
        return -1;
    found = PQntuples(res) == 1;
    if (found) {
        snprintf(saga->saga_id, sizeof(saga->saga_id), "%s", PQgetvalue(res, 0, 0));
        snprintf(saga->order_id, sizeof(saga->order_id), "%s", PQgetvalue(res, 0, 1));
        snprintf(saga->state, sizeof(saga->state), "%s", PQgetvalue(res, 0, 2));
        saga->stock_released = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        saga->payment_voided = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
        saga->compensation_attempts = atoi(PQgetvalue(res, 0, 5));
        snprintf(saga->payment_id, sizeof(saga->payment_id), "%s", PQgetvalue(res, 0, 6));
        snprintf(saga->product_id, sizeof(saga->product_id), "%s", PQgetvalue(res, 0, 7));
        snprintf(saga->quantity, sizeof(saga->quantity), "%s", PQgetvalue(res, 0, 8));
        saga->has_reason = !PQgetisnull(res, 0, 9);
        snprintf(saga->reason, sizeof(saga->reason), "%s", PQgetvalue(res, 0, 9));
        saga->order_version = atoll(PQgetvalue(res, 0, 10));
        snprintf(saga->now, sizeof(saga->now), "%s", PQgetvalue(res, 0, 11));
        saga->definition_version = atoi(PQgetvalue(res, 0, 12));
        snprintf(saga->opened_payment_id, sizeof(saga->opened_payment_id), "%s",
                 PQgetvalue(res, 0, 13));
        snprintf(saga->amount, sizeof(saga->amount), "%s", PQgetvalue(res, 0, 14));
    }
    PQclear(res);
    return found;
}

/* Records a step (and a state change when to differs from the current state). */
static int saga_step(PGconn *conn, struct saga *saga, const char *event, const char *to,
                     const char *message_id, const char *detail)
{
    char attempt[16];
    const char *params[] = {saga->saga_id, event, saga->state, to, attempt, message_id, detail};

    snprintf(attempt, sizeof(attempt), "%d", saga->compensation_attempts + 1);
    /* One round trip: the state change (if any) and the history row. */
    if (db_exec_later(conn, "saga step",
                      "WITH changed AS (UPDATE sagas SET state = $4, updated_at = now() "
                      "WHERE saga_id = $1 AND state <> $4) "
                      "INSERT INTO saga_steps (saga_id, event, state_from, state_to, attempt, "
                      "message_id, detail) VALUES ($1, $2, $3, $4, $5::int, $6, $7)",
                      7, params) != 0)
        return -1;
    if (strcmp(to, saga->state) == 0)
        return 0;
    log_debug("msg=\"saga transition\" saga_id=%s order_id=%s from=%s to=%s event=%s",
              saga->saga_id, saga->order_id, saga->state, to, event);
    snprintf(saga->state, sizeof(saga->state), "%s", to);
    return 0;
}

/*
 * Changes the saga's order (status, and reason / payment id when given) and
 * publishes its new snapshot on checkout.events. The update is queued
 * (db_exec_later): the snapshot is made from the order as loaded.
 */
static int order_update(PGconn *conn, const struct consumer_message *cause, struct saga *saga,
                        int status, const char *reason, const char *payment_id)
{
    char status_text[8], version_text[32];
    cJSON *payload;

    if (reason != NULL) {
        payload_copy_text(saga->reason, sizeof(saga->reason), reason);
        saga->has_reason = 1;
    }
    if (payment_id != NULL)
        snprintf(saga->payment_id, sizeof(saga->payment_id), "%s", payment_id);
    saga->order_version++;
    snprintf(status_text, sizeof(status_text), "%d", status);
    snprintf(version_text, sizeof(version_text), "%lld", saga->order_version);
    const char *params[] = {saga->order_id, status_text, saga->has_reason ? saga->reason : NULL,
                            saga->payment_id[0] ? saga->payment_id : NULL, version_text};
    if (db_exec_later(conn, "order update",
                      "UPDATE orders SET order_status = $2::int, reason = $3, payment_id = $4, "
                      "version = $5::bigint, last_update_time = now() WHERE order_id = $1::bigint",
                      5, params) != 0)
        return -1;
    payload = cJSON_CreateObject();
    cJSON_AddNumberToObject(payload, "order_id", atof(saga->order_id));
    cJSON_AddStringToObject(payload, "idempotency_key", saga->saga_id);
    cJSON_AddNumberToObject(payload, "product_id", atoi(saga->product_id));
    cJSON_AddNumberToObject(payload, "order_status", status);
    if (saga->payment_id[0])
        cJSON_AddStringToObject(payload, "payment_id", saga->payment_id);
    else
        cJSON_AddNullToObject(payload, "payment_id");
    if (saga->has_reason)
        cJSON_AddStringToObject(payload, "reason", saga->reason);
    else
        cJSON_AddNullToObject(payload, "reason");
    cJSON_AddStringToObject(payload, "last_update_time", saga->now);
    cJSON_AddNumberToObject(payload, "version", (double)saga->order_version);
    return payload_emit(conn, TOPIC_CHECKOUT_EVENTS, saga->saga_id, MSG_ORDER_UPDATED, SERVICE,
                        cause, saga->saga_id, payload);
}

/* Sends a command about the saga's order to topic. */
static int command(PGconn *conn, const struct consumer_message *cause, const struct saga *saga,
                   const char *topic, const char *type, cJSON *payload)
{
    if (payload == NULL)
        payload = cJSON_CreateObject();
    cJSON_AddNumberToObject(payload, "order_id", atof(saga->order_id));
    return payload_emit(conn, topic, saga->saga_id, type, SERVICE, cause, saga->saga_id, payload);
}

static int timer_set(PGconn *conn, const char *saga_id, const char *kind, long delay_ms)
{
    char delay[32];
    const char *params[] = {saga_id, kind, delay};

    snprintf(delay, sizeof(delay), "%ld", delay_ms);
    return db_exec_later(conn, "timer set",
                         "INSERT INTO timers (saga_id, kind, fire_at) "
                         "VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond') "
                         "ON CONFLICT (saga_id, kind) DO UPDATE SET fire_at = excluded.fire_at",
                         3, params);
}

static int timer_clear(PGconn *conn, const char *saga_id, const char *kind)
{
    const char *params[] = {saga_id, kind};

    return db_exec_later(conn, "timer clear", "DELETE FROM timers WHERE saga_id = $1 AND kind = $2",
                         2, params);
}

/* Sends whichever compensations are still unconfirmed. */
static int send_compensations(PGconn *conn, const struct consumer_message *cause,
                              const struct saga *saga)
{
    if (!saga->stock_released &&
        command(conn, cause, saga, TOPIC_INVENTORY_COMMANDS, MSG_RELEASE_STOCK, NULL) != 0)
        return -1;
    if (!saga->payment_voided) {
        cJSON *payload = cJSON_CreateObject();

        /* Empty when a version 2 saga has not heard back: payment then
         * voids whatever it opened for the order. */
        cJSON_AddStringToObject(payload, "payment_id",
                                saga->payment_id[0] ? saga->payment_id : saga->opened_payment_id);
        if (command(conn, cause, saga, TOPIC_PAYMENT_COMMANDS, MSG_CANCEL_PAYMENT, payload) != 0)
            return -1;
    }
    return 0;
}

/* Asks payment to cancel the payment unless it is paid already. Payment
 * decides the race with the provider's result: it answers payment_voided, or
 * payment_succeeded when the money came first. */
static int expire_payment(PGconn *conn, const struct consumer_message *cause,
                          const struct saga *saga)
{
    cJSON *payload = cJSON_CreateObject();

    cJSON_AddStringToObject(payload, "payment_id", saga->payment_id);
    cJSON_AddTrueToObject(payload, "unless_paid");
    return command(conn, cause, saga, TOPIC_PAYMENT_COMMANDS, MSG_CANCEL_PAYMENT, payload);
}

/*
 * Starts the saga's count of resends again. The resends of an expiry while
 * payment was down leave a count behind, which neither the compensation nor
 * the delivery that follows must inherit.
 */
static int attempts_reset(PGconn *conn, struct saga *saga)
{
    const char *params[] = {saga->saga_id};

    if (saga->compensation_attempts == 0)
        return 0;
    saga->compensation_attempts = 0;
    return db_exec_later(conn, "attempts reset",
                         "UPDATE sagas SET compensation_attempts = 0 WHERE saga_id = $1", 1,
                         params);
}

/* Gives up on the payment: cancel the order, release its stock, void its
 * payment, and keep retrying those until both are confirmed, in a
 * round of resends of its own. */
static int compensate(PGconn *conn, const struct consumer_message *cause, struct saga *saga,
                      const struct saga_config *cfg, const char *event, const char *reason)
{
    if (attempts_reset(conn, saga) != 0 ||
        saga_step(conn, saga, event, "compensating", cause ? cause->env->id : NULL, reason) != 0 ||
        timer_clear(conn, saga->saga_id, "payment_timeout") != 0 ||
        order_update(conn, cause, saga, ORDER_CANCELLED, reason, NULL) != 0 ||
        send_compensations(conn, cause, saga) != 0 ||
        timer_set(conn, saga->saga_id, "compensation_retry", cfg->compensation_retry_ms) != 0)
        return -1;
    crashpoint("checkout.in_compensation");
    log_info("msg=\"order cancelled\" saga_id=%s order_id=%s reason=\"%s\"", saga->saga_id,
             saga->order_id, reason);
    return 0;
}

/* Called when one compensation is confirmed; closes the saga after both. */
static int compensation_confirmed(PGconn *conn, struct saga *saga, const char *column,
                                  const char *event, const char *message_id, const char *detail)
{
    const char *params[] = {saga->saga_id};
    /* Literals, not a formatted buffer: db.c prepares statements by address. */
    const char *sql =
        strcmp(column, "stock_released") == 0
            ? "UPDATE sagas SET stock_released = true, updated_at = now() WHERE saga_id = $1"
            : "UPDATE sagas SET payment_voided = true, updated_at = now() WHERE saga_id = $1";

    if (db_exec_later(conn, "compensation confirmed", sql, 1, params) != 0)
        return -1;
    if (strcmp(column, "stock_released") == 0)
        saga->stock_released = 1;
    else
        saga->payment_voided = 1;
    if (saga->stock_released && saga->payment_voided &&
        (strcmp(saga->state, "compensating") == 0 ||
         strcmp(saga->state, "compensation_failed") == 0)) {
        if (timer_clear(conn, saga->saga_id, "compensation_retry") != 0)
            return -1;
        return saga_step(conn, saga, event, "cancelled", message_id, detail);
    }
    return saga_step(conn, saga, event, saga->state, message_id, detail);
}

static int start_checkout(PGconn *conn, const struct consumer_message *msg,
                          const struct saga_config *cfg)
{
    const char *key = payload_str(msg->env->payload, "idempotency_key");
    long long product = WIDGET_PRODUCT_ID;
    char product_id[16], version[8], price[32], amount[32];
    struct saga saga = {0};
    PGresult *res;
    int open_early;

    if (key == NULL || key[0] == '\0' || strlen(key) >= sizeof(saga.saga_id))
        return CONSUMER_FAIL;
    payload_int(msg->env->payload, "product_id", &product);
    snprintf(product_id, sizeof(product_id), "%lld", product);
    open_early = cfg->open_payment_early && price_known(product_id, price, sizeof(price)) &&
                 payload_amount_times(price, "1", amount, sizeof(amount)) == 0;
    const char *params[] = {key, product_id, open_early ? amount : NULL};
    /* One order per idempotency key, whatever the number of requests. */
    res = db_query(conn, "order create",
                   "INSERT INTO orders (idempotency_key, product_id, order_status, amount) "
                   "VALUES ($1, $2::int, 0, $3::numeric) ON CONFLICT (idempotency_key) DO NOTHING "
                   "RETURNING order_id, version, " SNAPSHOT_NOW,
                   3, params);
    if (res == NULL)
        return -1;
    if (PQntuples(res) == 0) {
        PQclear(res);
        log_info("msg=\"repeated checkout request\" saga_id=%s", key);
        return CONSUMER_SKIP;
    }
    snprintf(saga.order_id, sizeof(saga.order_id), "%s", PQgetvalue(res, 0, 0));
    saga.order_version = atoll(PQgetvalue(res, 0, 1));
    snprintf(saga.now, sizeof(saga.now), "%s", PQgetvalue(res, 0, 2));
    snprintf(saga.product_id, sizeof(saga.product_id), "%s", product_id);
    PQclear(res);
    snprintf(saga.saga_id, sizeof(saga.saga_id), "%s", key);
    snprintf(saga.state, sizeof(saga.state), "%s", "reserving");
    saga.definition_version = open_early ? SAGA_RESERVE_AND_OPEN : SAGA_RESERVE_THEN_OPEN;
    snprintf(version, sizeof(version), "%d", saga.definition_version);
    const char *insert[] = {key, saga.order_id, version};
    if (db_exec_later(conn, "saga create",
                      "INSERT INTO sagas (saga_id, order_id, definition_version, state) "
                      "VALUES ($1, $2::bigint, $3::int, 'reserving')",
                      3, insert) != 0)
        return -1;
    if (saga_step(conn, &saga, msg->env->type, "reserving", msg->env->id, NULL) != 0 ||
        order_update(conn, msg, &saga, ORDER_PENDING, NULL, NULL) != 0)
        return -1;
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddNumberToObject(payload, "product_id", (double)product);
    cJSON_AddNumberToObject(payload, "quantity", 1);
    if (command(conn, msg, &saga, TOPIC_INVENTORY_COMMANDS, MSG_RESERVE_STOCK, payload) != 0)
        return -1;
    if (open_early) {
        payload = cJSON_CreateObject();
        cJSON_AddStringToObject(payload, "amount", amount);
        if (command(conn, msg, &saga, TOPIC_PAYMENT_COMMANDS, MSG_CREATE_PAYMENT, payload) != 0)
            return -1;
    }
    log_debug("msg=\"checkout started\" saga_id=%s order_id=%s version=%d", key, saga.order_id,
              saga.definition_version);
    return CONSUMER_OK;
}

/* The payment is open and the stock reserved: offer the payment on the
 * order and start the payment timeout. */
static int offer_payment(PGconn *conn, const struct consumer_message *msg,
                         const struct saga_config *cfg, struct saga *saga, const char *payment_id)
{
    return saga_step(conn, saga, msg->env->type, "awaiting_payment", msg->env->id, payment_id) !=
                       0 ||
                   timer_set(conn, saga->saga_id, "payment_timeout", cfg->payment_timeout_ms) !=
                       0 ||
                   order_update(conn, msg, saga, ORDER_PENDING, NULL, payment_id) != 0
               ? -1
               : 0;
}

/* Version 2: the stock is reserved at amount, the payment was asked for at
 * the order's amount, and may or may not have answered yet. */
static int stock_reserved_after_asking_payment(PGconn *conn, const struct consumer_message *msg,
                                               const struct saga_config *cfg, struct saga *saga,
                                               const char *amount)
{
    if (strcmp(amount, saga->amount) != 0) {
        log_warn("msg=\"price changed since the payment was opened\" saga_id=%s opened=%s "
                 "reserved=%s",
                 saga->saga_id, saga->amount, amount);
        return compensate(conn, msg, saga, cfg, msg->env->type, "price changed; please retry");
    }
    if (saga->opened_payment_id[0] == '\0')
        return saga_step(conn, saga, msg->env->type, "opening_payment", msg->env->id, NULL);
    return offer_payment(conn, msg, cfg, saga, saga->opened_payment_id);
}

/* Handles a reply about an existing saga. */
static int advance(PGconn *conn, const struct consumer_message *msg, const struct saga_config *cfg,
                   struct saga *saga)
{
    const char *type = msg->env->type;
    const char *id = msg->env->id;
    const char *state = saga->state;

    if (strcmp(type, MSG_STOCK_RESERVED) == 0 && strcmp(state, "reserving") == 0) {
        const char *unit_price = payload_str(msg->env->payload, "unit_price");
        char amount[32];
        const char *params[] = {saga->order_id, amount};

        if (unit_price == NULL ||
            payload_amount_times(unit_price, saga->quantity, amount, sizeof(amount)) != 0)
            return CONSUMER_FAIL;
        price_learn(saga->product_id, unit_price);
        if (saga->definition_version >= SAGA_RESERVE_AND_OPEN)
            return stock_reserved_after_asking_payment(conn, msg, cfg, saga, amount);
        if (db_exec_later(conn, "order amount",
                          "UPDATE orders SET amount = $2::numeric WHERE order_id = $1::bigint", 2,
                          params) != 0)
            return -1;
        if (saga_step(conn, saga, type, "opening_payment", id, NULL) != 0)
            return -1;
        cJSON *payload = cJSON_CreateObject();
        cJSON_AddStringToObject(payload, "amount", amount);
        return command(conn, msg, saga, TOPIC_PAYMENT_COMMANDS, MSG_CREATE_PAYMENT, payload);
    }
    if (strcmp(type, MSG_STOCK_REJECTED) == 0 && strcmp(state, "reserving") == 0) {
        const char *reason = payload_str(msg->env->payload, "reason");
        const char *params[] = {saga->saga_id};

        /* Nothing was taken; only a payment asked for needs voiding. */
        saga->stock_released = 1;
        price_forget(saga->product_id);
        if (saga->definition_version >= SAGA_RESERVE_AND_OPEN)
            return db_exec_later(conn, "stock never taken",
                                 "UPDATE sagas SET stock_released = true WHERE saga_id = $1", 1,
                                 params) != 0
                       ? -1
                       : compensate(conn, msg, saga, cfg, type, reason ? reason : "out of stock");
        /* Version 1 asked for no payment yet: nothing to undo, and the
         * saga's record says so. */
        saga->payment_voided = 1;
        return db_exec_later(conn, "nothing to undo",
                             "UPDATE sagas SET stock_released = true, payment_voided = true "
                             "WHERE saga_id = $1",
                             1, params) != 0 ||
                       saga_step(conn, saga, type, "cancelled", id, reason) != 0 ||
                       order_update(conn, msg, saga, ORDER_CANCELLED,
                                    reason ? reason : "out of stock", NULL) != 0
                   ? -1
                   : 0;
    }
    if (strcmp(type, MSG_PAYMENT_CREATED) == 0 &&
        (strcmp(state, "opening_payment") == 0 ||
         (strcmp(state, "reserving") == 0 && saga->definition_version >= SAGA_RESERVE_AND_OPEN))) {
        const char *payment_id = payload_str(msg->env->payload, "payment_id");
        const char *params[] = {saga->saga_id, payment_id};

        if (payment_id == NULL || strlen(payment_id) >= sizeof(saga->payment_id))
            return CONSUMER_FAIL;
        if (strcmp(state, "opening_payment") == 0)
            return offer_payment(conn, msg, cfg, saga, payment_id);
        /* Version 2, still reserving: kept on the saga, since the stock may
         * still be refused. */
        return db_exec_later(conn, "payment opened",
                             "UPDATE sagas SET payment_id = $2 WHERE saga_id = $1", 2, params) != 0
                   ? -1
                   : saga_step(conn, saga, type, "reserving", id, payment_id);
    }
    int expiring = strcmp(state, "expiring_payment") == 0;
    if (strcmp(type, MSG_PAYMENT_SUCCEEDED) == 0 &&
        (strcmp(state, "awaiting_payment") == 0 || expiring)) {
        return attempts_reset(conn, saga) != 0 ||
                       saga_step(conn, saga, type, "dispatching", id, NULL) != 0 ||
                       timer_clear(conn, saga->saga_id, "payment_timeout") != 0 ||
                       (expiring && timer_clear(conn, saga->saga_id, "compensation_retry") != 0) ||
                       order_update(conn, msg, saga, ORDER_PAID, NULL, NULL) != 0 ||
                       command(conn, msg, saga, TOPIC_INVENTORY_COMMANDS, MSG_COMMIT_STOCK, NULL) !=
                           0 ||
                       command(conn, msg, saga, TOPIC_DISPATCH_COMMANDS, MSG_START_DISPATCH,
                               NULL) != 0
                   ? -1
                   : 0;
    }
    if (strcmp(type, MSG_PAYMENT_FAILED) == 0 &&
        (strcmp(state, "awaiting_payment") == 0 || expiring))
        return compensate(conn, msg, saga, cfg, type, "payment failed");
    if (strcmp(type, MSG_PAYMENT_VOIDED) == 0 && expiring) {
        const char *params[] = {saga->saga_id};

        /* Cancelled before any money came: now give up on the order. */
        saga->payment_voided = 1;
        return db_exec_later(conn, "payment expired",
                             "UPDATE sagas SET payment_voided = true WHERE saga_id = $1", 1,
                             params) != 0
                   ? -1
                   : compensate(conn, msg, saga, cfg, type, "payment timed out");
    }
    if (strcmp(type, MSG_STOCK_RELEASED) == 0 && !saga->stock_released)
        return compensation_confirmed(conn, saga, "stock_released", type, id, NULL);
    if (strcmp(type, MSG_PAYMENT_VOIDED) == 0 && !saga->payment_voided)
        return compensation_confirmed(conn, saga, "payment_voided", type, id,
                                      payload_str(msg->env->payload, "outcome"));
    if (strcmp(type, MSG_DISPATCH_COMPLETED) == 0 && strcmp(state, "dispatching") == 0) {
        return saga_step(conn, saga, type, "completed", id, NULL) != 0 ||
                       order_update(conn, msg, saga, ORDER_DISPATCHED, NULL, NULL) != 0
                   ? -1
                   : 0;
    }
    /* Late, repeated or out-of-order: keep it in the history, change nothing.
     * (A success after cancellation is refunded by payment itself.) */
    return saga_step(conn, saga, type, state, id, "ignored in this state");
}

int saga_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                size_t errlen)
{
    const struct saga_config *cfg = arg;
    const char *type = msg->env->type;
    long long order = 0;
    char order_id[32];
    struct saga saga;
    int rc;

    if (strcmp(type, MSG_CHECKOUT_REQUESTED) == 0) {
        rc = start_checkout(conn, msg, cfg);
    } else if (strcmp(type, MSG_STOCK_RESERVED) == 0 || strcmp(type, MSG_STOCK_REJECTED) == 0 ||
               strcmp(type, MSG_STOCK_RELEASED) == 0 || strcmp(type, MSG_PAYMENT_CREATED) == 0 ||
               strcmp(type, MSG_PAYMENT_SUCCEEDED) == 0 || strcmp(type, MSG_PAYMENT_FAILED) == 0 ||
               strcmp(type, MSG_PAYMENT_VOIDED) == 0 || strcmp(type, MSG_PAYMENT_REFUNDED) == 0 ||
               strcmp(type, MSG_DISPATCH_COMPLETED) == 0) {
        if (payload_int(msg->env->payload, "order_id", &order) != 0) {
            snprintf(err, errlen, "%s without order_id", type);
            return CONSUMER_FAIL;
        }
        snprintf(order_id, sizeof(order_id), "%lld", order);
        rc = saga_load(conn, order_id, NULL, &saga);
        if (rc == 0) {
            log_warn("msg=\"event for an unknown saga ignored\" type=%s order_id=%s", type,
                     order_id);
            return CONSUMER_SKIP;
        }
        if (rc > 0)
            rc = advance(conn, msg, cfg, &saga);
    } else {
        /* Other events on these topics (progress, snapshots) are not ours. */
        return CONSUMER_SKIP;
    }
    if (rc == CONSUMER_FAIL) {
        snprintf(err, errlen, "malformed %s", type);
        return CONSUMER_FAIL;
    }
    if (rc < 0) {
        snprintf(err, errlen, "database failure (SQLSTATE %s)", db_last_sqlstate());
        return consumer_db_failure(conn);
    }
    return rc == CONSUMER_SKIP ? CONSUMER_SKIP : CONSUMER_OK;
}

/* Fires one due timer: the payment timeout or a compensation retry. */
static int fire_timer(PGconn *conn, const struct saga_config *cfg, const char *saga_id,
                      const char *kind)
{
    struct saga saga;
    const char *params[] = {saga_id, kind};
    PGresult *res;
    int due, found;

    /* Lock order everywhere: saga first, then its timers. */
    found = saga_load(conn, NULL, saga_id, &saga);
    if (found <= 0)
        return found;
    res = db_query(conn, "timer lock",
                   "DELETE FROM timers WHERE saga_id = $1 AND kind = $2 AND fire_at <= now() "
                   "RETURNING saga_id",
                   2, params);
    if (res == NULL)
        return -1;
    due = PQntuples(res) == 1;
    PQclear(res);
    if (!due)
        return 0;
    if (strcmp(kind, "payment_timeout") == 0) {
        if (strcmp(saga.state, "awaiting_payment") != 0)
            return 0;
        /* The order stays pending until payment answers: a success already
         * on its way (checkout or payment was down) is kept, not refunded. */
        log_info("msg=\"payment timed out; asking payment to cancel it unless paid\" "
                 "saga_id=%s order_id=%s",
                 saga.saga_id, saga.order_id);
        if (saga_step(conn, &saga, "payment_timeout", "expiring_payment", NULL,
                      "cancel unless paid") != 0 ||
            expire_payment(conn, NULL, &saga) != 0 ||
            timer_set(conn, saga_id, "compensation_retry", cfg->compensation_retry_ms) != 0)
            return -1;
        return 0;
    }
    int expiring = strcmp(saga.state, "expiring_payment") == 0;
    if (strcmp(saga.state, "compensating") != 0 && !expiring)
        return 0;
    saga.compensation_attempts++;
    char attempts[16];
    const char *update[] = {saga_id, attempts};
    snprintf(attempts, sizeof(attempts), "%d", saga.compensation_attempts);
    if (db_exec(conn, "compensation attempt",
                "UPDATE sagas SET compensation_attempts = $2::int WHERE saga_id = $1", 2,
                update) != 0)
        return -1;
    /* An unanswered expiry only waits for payment to come back; nothing
     * was given up yet that an operator would need to see. */
    if (!expiring && saga.compensation_attempts >= cfg->max_compensation_rounds) {
        log_error("msg=\"compensation keeps failing; saga parked\" saga_id=%s order_id=%s "
                  "attempts=%d stock_released=%d payment_voided=%d",
                  saga.saga_id, saga.order_id, saga.compensation_attempts, saga.stock_released,
                  saga.payment_voided);
        return saga_step(conn, &saga, "compensation_retry", "compensation_failed", NULL,
                         "compensation unconfirmed after every retry");
    }
    /* Exponential spacing of the resends, capped at a minute. */
    long delay = cfg->compensation_retry_ms;
    for (int i = 0; i < saga.compensation_attempts && delay < 60000; i++)
        delay *= 2;
    if (saga_step(conn, &saga, "compensation_retry", saga.state, NULL, "resent") != 0 ||
        (expiring ? expire_payment(conn, NULL, &saga) : send_compensations(conn, NULL, &saga)) !=
            0 ||
        timer_set(conn, saga_id, "compensation_retry", delay < 60000 ? delay : 60000) != 0)
        return -1;
    return 0;
}

int saga_resume(PGconn *conn, const char *saga_id, const struct saga_config *cfg)
{
    struct saga saga;
    int found = saga_load(conn, NULL, saga_id, &saga);

    if (found <= 0)
        return found < 0 ? -1 : -2;
    if (strcmp(saga.state, "compensation_failed") != 0)
        return 0;
    if (attempts_reset(conn, &saga) != 0 ||
        saga_step(conn, &saga, "operator_resume", "compensating", NULL, "resumed by an operator") !=
            0 ||
        send_compensations(conn, NULL, &saga) != 0 ||
        timer_set(conn, saga.saga_id, "compensation_retry", cfg->compensation_retry_ms) != 0)
        return -1;
    log_info("msg=\"parked saga resumed by an operator\" saga_id=%s order_id=%s stock_released=%d "
             "payment_voided=%d",
             saga.saga_id, saga.order_id, saga.stock_released, saga.payment_voided);
    return 1;
}

/*
 * Gives up on a saga that waited too long in a forward step for another
 * service's answer (reserving: inventory; opening_payment: payment), so that
 * a command lost to a dead-letter topic, or a service down for long, ends the
 * order cancelled instead of pending for ever. The compensations are the
 * usual ones and safe whatever comes late: inventory remembers a release
 * that came before its reservation, and payment voids the order's payment
 * whenever it opens it, since the cancel follows the create on the saga's
 * partition.
 */
static int fire_step_timeout(PGconn *conn, const struct saga_config *cfg, const char *saga_id)
{
    struct saga saga;
    const char *reason;
    int found, reserving;

    found = saga_load(conn, NULL, saga_id, &saga);
    if (found <= 0)
        return found;
    reserving = strcmp(saga.state, "reserving") == 0;
    reason = reserving ? "inventory did not answer in time; please retry"
                       : "payment did not answer in time; please retry";
    log_warn("msg=\"forward step timed out; cancelling the order\" saga_id=%s order_id=%s "
             "state=%s step_timeout_ms=%ld",
             saga.saga_id, saga.order_id, saga.state, cfg->step_timeout_ms);
    if (reserving && saga.definition_version < SAGA_RESERVE_AND_OPEN) {
        const char *update[] = {saga_id};

        /* Version 1 asked for no payment yet: there is none to void. */
        saga.payment_voided = 1;
        if (db_exec_later(conn, "no payment asked",
                          "UPDATE sagas SET payment_voided = true WHERE saga_id = $1", 1,
                          update) != 0)
            return -1;
    }
    return compensate(conn, NULL, &saga, cfg, "step_timeout", reason);
}

/* Writes the ids of the sagas passed over at this time into out, one per
 * line, for the statements to split (saga ids have no newline). */
static void passed_over_list(const struct saga_config *cfg, char *out, size_t cap)
{
    double now = backoff_now_ms();
    size_t len = 0;

    out[0] = '\0';
    for (int i = 0; i < SAGA_PASSED_OVER_MAX; i++) {
        const struct saga_passed_over *p = &cfg->passed_over[i];
        int n;

        if (p->saga_id[0] == '\0' || p->until_ms <= now)
            continue;
        n = snprintf(out + len, cap - len, "%s%s", len ? "\n" : "", p->saga_id);
        if (n < 0 || (size_t)n >= cap - len) {
            out[len] = '\0';
            return;
        }
        len += (size_t)n;
    }
}

/* Passes over saga_id for SAGA_PASSED_OVER_MS, in the place of the entry
 * tried again soonest when every place is taken. */
static void pass_over(struct saga_config *cfg, const char *saga_id)
{
    struct saga_passed_over *slot = &cfg->passed_over[0];

    for (int i = 0; i < SAGA_PASSED_OVER_MAX; i++) {
        struct saga_passed_over *p = &cfg->passed_over[i];

        if (strcmp(p->saga_id, saga_id) == 0) {
            slot = p;
            break;
        }
        if (p->until_ms < slot->until_ms)
            slot = p;
    }
    snprintf(slot->saga_id, sizeof(slot->saga_id), "%s", saga_id);
    slot->until_ms = backoff_now_ms() + SAGA_PASSED_OVER_MS;
    log_warn("msg=\"saga passed over after its timer or step timeout failed\" saga_id=%s "
             "retry_ms=%d",
             saga_id, SAGA_PASSED_OVER_MS);
}

/* In the open transaction, locks the saga that has waited longest in a
 * forward step, if past the step timeout (the partial index sagas_open holds
 * only sagas in flight; one a handler holds is skipped, as its answer may
 * just have come, and so is one passed over). Returns 1 when found (saga_id
 * filled), 0 when none, -1 on failure. */
static int step_overdue(PGconn *conn, const struct saga_config *cfg, char *saga_id, size_t cap)
{
    char timeout[32], passed_over[SAGA_PASSED_OVER_MAX * ENVELOPE_KEY_MAX];
    const char *params[] = {timeout, passed_over};
    PGresult *res;
    int found;

    snprintf(timeout, sizeof(timeout), "%ld", cfg->step_timeout_ms);
    passed_over_list(cfg, passed_over, sizeof(passed_over));
    res = db_query(conn, "steps overdue",
                   "SELECT saga_id FROM sagas WHERE state IN ('reserving', 'opening_payment') "
                   "AND updated_at <= now() - $1::bigint * interval '1 millisecond' "
                   "AND saga_id <> ALL (string_to_array($2, E'\\n')) "
                   "ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED",
                   2, params);
    if (res == NULL)
        return -1;
    found = PQntuples(res) == 1;
    if (found)
        snprintf(saga_id, cap, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return found;
}

/* Ends the open transaction after a timer or step timeout handler: commits
 * unless it failed. Returns 1 when committed, -1 on failure. */
static int commit_fired(PGconn *conn, int rc)
{
    if (rc < 0) {
        db_rollback(conn);
        return -1;
    }
    crashpoint("checkout.timer_before_commit");
    return db_commit(conn) != 0 ? -1 : 1;
}

/* Fires the durable timer due first, if any, of a saga not passed over.
 * Returns 1 when one was handled, 0 when none is due, -1 on failure (and the
 * saga is passed over). */
static int fire_due_timer(PGconn *conn, struct saga_config *cfg)
{
    PGresult *res;
    char saga_id[ENVELOPE_KEY_MAX], kind[32];
    char passed_over[SAGA_PASSED_OVER_MAX * ENVELOPE_KEY_MAX];
    const char *params[] = {passed_over};
    int rc;

    passed_over_list(cfg, passed_over, sizeof(passed_over));
    res = db_query(conn, "timers due",
                   "SELECT saga_id, kind FROM timers WHERE fire_at <= now() "
                   "AND saga_id <> ALL (string_to_array($1, E'\\n')) "
                   "ORDER BY fire_at LIMIT 1",
                   1, params);
    if (res == NULL)
        return -1;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    snprintf(saga_id, sizeof(saga_id), "%s", PQgetvalue(res, 0, 0));
    snprintf(kind, sizeof(kind), "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    if (db_begin(conn) != 0)
        return -1;
    rc = commit_fired(conn, fire_timer(conn, cfg, saga_id, kind));
    if (rc < 0)
        pass_over(cfg, saga_id);
    return rc;
}

/* Gives up on the saga that has waited longest past the step timeout, if
 * any and not passed over. Returns 1 when one was, 0 when none is overdue,
 * -1 on failure (and the saga, if one was found, is passed over). */
static int fire_overdue_step(PGconn *conn, struct saga_config *cfg)
{
    char saga_id[ENVELOPE_KEY_MAX];
    int found, rc;

    if (db_begin(conn) != 0)
        return -1;
    found = step_overdue(conn, cfg, saga_id, sizeof(saga_id));
    if (found == 0) {
        db_rollback(conn);
        return 0;
    }
    rc = commit_fired(conn, found > 0 ? fire_step_timeout(conn, cfg, saga_id) : -1);
    if (rc < 0 && found > 0)
        pass_over(cfg, saga_id);
    return rc;
}

int saga_fire_timers(PGconn *conn, void *arg)
{
    struct saga_config *cfg = arg;
    double now = backoff_now_ms();
    int rc;

    /* Overdue steps are looked for before any due timer, so that a backlog
     * of timers cannot hold them back, and while none is found (or giving
     * up on one fails) at most once a tick. Not before this process has
     * itself been up for the step timeout: that long for its consumer to
     * read the answers that piled up in its topics while it was down. */
    if (now - cfg->started_ms >= (double)cfg->step_timeout_ms && now >= cfg->next_step_sweep_ms) {
        rc = fire_overdue_step(conn, cfg);
        if (rc <= 0) /* none, or it failed: look again a tick later */
            cfg->next_step_sweep_ms = now + STEP_SWEEP_INTERVAL_MS;
        if (rc != 0) {
            /* Then one timer, so that neither kind waits on the other, not
             * even on a step timeout that keeps failing. */
            int timer = fire_due_timer(conn, cfg);

            return timer < 0 || (rc < 0 && timer == 0) ? -1 : 1;
        }
    }
    return fire_due_timer(conn, cfg);
}
