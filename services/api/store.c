/*
 * store.c - widget-store endpoints over the read model.
 */
#define _POSIX_C_SOURCE 200809L
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "contracts.h"
#include "db.h"
#include "envelope.h"
#include "log.h"
#include "payload.h"
#include "projections.h"

#define KEY_MAX    100
#define STATUS_MAX 32

static void reply_text(struct store_reply *reply, int status, const char *text)
{
    reply->status = status;
    reply->content_type = "text/plain; charset=utf-8";
    reply->body = strdup(text);
}

static void reply_json(struct store_reply *reply, const char *json)
{
    reply->status = 200;
    reply->content_type = "application/json";
    reply->body = strdup(json);
}

int store_valid_key(const char *key)
{
    size_t len = strlen(key);

    if (len == 0 || len > KEY_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];

        if (!(isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

int store_valid_status(const char *status)
{
    size_t len = strlen(status);

    if (len == 0 || len > STATUS_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!(islower((unsigned char)status[i]) || status[i] == '_'))
            return 0;
    }
    return 1;
}

int store_parse_order_id(const char *text, long long *out)
{
    char *end;
    long long value;

    if (text[0] == '\0' || strlen(text) > 18 || !isdigit((unsigned char)text[0]))
        return 0;
    errno = 0;
    value = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || value <= 0)
        return 0;
    *out = value;
    return 1;
}

/*
 * Runs a one-value query on a pooled connection. Returns 1 and a malloc'd
 * copy of the value in *value (NULL for SQL NULL), 0 when no row, -1 when the
 * database failed.
 */
static int query_value(struct store *store, const char *what, const char *sql, int nparams,
                       const char *const *params, char **value)
{
    PGconn *conn = db_pool_acquire(store->pool, 2000);
    PGresult *res;
    int rc;

    *value = NULL;
    if (conn == NULL)
        return -1;
    res = db_query(conn, what, sql, nparams, params);
    if (res == NULL) {
        rc = -1;
    } else if (PQntuples(res) == 0) {
        rc = 0;
    } else {
        rc = 1;
        if (!PQgetisnull(res, 0, 0))
            *value = strdup(PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    db_pool_release(store->pool, conn);
    return rc;
}

static double now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
}

/*
 * Admission control: at most max_pending checkout, webhook and restock calls
 * wait for their answers at once. Beyond that the pipeline is saturated, and
 * accepting more would only lengthen every queue until calls time out (and
 * timed-out checkouts still cost their whole saga); a quick 503 with
 * Retry-After lets clients come back instead. Returns 1 when admitted (call
 * leave() when done), else 0 with the reply written.
 */
static int enter(struct store *store, struct store_reply *reply)
{
    if (atomic_fetch_add(&store->pending, 1) >= store->max_pending) {
        atomic_fetch_sub(&store->pending, 1);
        reply_text(reply, 503, "Too many purchases in progress; retry in a moment\n");
        return 0;
    }
    return 1;
}

static void leave(struct store *store)
{
    atomic_fetch_sub(&store->pending, 1);
}

/* Writes one command to the outbox in its own transaction, after an optional
 * guard statement (which must affect a row for the command to be sent).
 * Returns 1 if sent, 0 if the guard said no, -1 on failure. */
static int send_command(struct store *store, const char *guard_sql, const char *guard_param,
                        const char *topic, const char *key, const char *type, cJSON *payload)
{
    PGconn *conn = db_pool_acquire(store->pool, 2000);
    int rc = -1;

    if (conn == NULL) {
        cJSON_Delete(payload);
        return -1;
    }
    if (db_begin(conn) != 0)
        goto out;
    if (guard_sql) {
        const char *params[] = {guard_param};
        PGresult *res = db_query(conn, "command guard", guard_sql, 1, params);

        if (res == NULL)
            goto rollback;
        rc = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        if (rc == 0) {
            db_rollback(conn);
            goto out;
        }
    }
    if (payload_emit(conn, topic, key, type, "api", NULL, key, payload) != 0) {
        payload = NULL;
        goto rollback;
    }
    payload = NULL;
    rc = db_commit(conn) == 0 ? 1 : -1;
    goto out;
rollback:
    rc = -1;
    db_rollback(conn);
out:
    cJSON_Delete(payload);
    db_pool_release(store->pool, conn);
    return rc;
}

void store_product(struct store *store, struct store_reply *reply)
{
    char *json = NULL;
    int rc = query_value(store, "product",
                         "SELECT json_build_object('product_id', product_id, 'product', product, "
                         "'description', description, 'inventory', inventory, 'price', price) "
                         "FROM products WHERE product_id = 1",
                         0, NULL, &json);

    if (rc < 0)
        reply_text(reply, 503, "Database unavailable, try again\n");
    else if (rc == 0)
        reply_text(reply, 503, "Product not loaded yet, try again\n");
    else
        reply_json(reply, json);
    free(json);
}

#define ORDER_JSON                                                                                 \
    "json_build_object('order_id', o.order_id, 'order_status', o.order_status, "                   \
    "'last_update_time', o.last_update_time, "                                                     \
    "'progress_remaining', coalesce(p.progress_remaining, 10), 'product_id', o.product_id)"

void store_orders(struct store *store, struct store_reply *reply)
{
    char *json = NULL;
    int rc = query_value(store, "orders",
                         "SELECT coalesce(json_agg(" ORDER_JSON " ORDER BY o.order_id DESC), '[]') "
                         "FROM (SELECT * FROM orders ORDER BY order_id DESC LIMIT 1000) o "
                         "LEFT JOIN order_progress p USING (order_id)",
                         0, NULL, &json);

    if (rc < 0)
        reply_text(reply, 503, "Database unavailable, try again\n");
    else
        reply_json(reply, json ? json : "[]");
    free(json);
}

void store_order(struct store *store, const char *id_text, struct store_reply *reply)
{
    long long id;
    char *json = NULL;
    int rc;

    if (!store_parse_order_id(id_text, &id)) {
        reply_text(reply, 400, "Invalid order ID: expected a positive integer\n");
        return;
    }
    char id_param[32];
    snprintf(id_param, sizeof(id_param), "%lld", id);
    const char *params[] = {id_param};
    rc = query_value(store, "order",
                     "SELECT " ORDER_JSON " FROM orders o LEFT JOIN order_progress p "
                     "USING (order_id) WHERE o.order_id = $1::bigint",
                     1, params, &json);
    if (rc < 0)
        reply_text(reply, 503, "Database unavailable, try again\n");
    else if (rc == 0)
        reply_text(reply, 404, "Order not found\n");
    else
        reply_json(reply, json);
    free(json);
}

/*
 * Waits, under the deadline, until check(store, value) says done, for a
 * waiter the caller registered before the first look at the row (before
 * sending its command when check_now is 0), so no change can go unnoticed.
 * A value is what sql (with its parameters) reads, or the answer a
 * notification carried; sql is run first only if check_now, and again
 * whenever a wake-up brought no answer of its own (the fallback interval,
 * several changes at once). Returns the final value (malloc'd, may
 * be NULL) and sets *outcome to 1 (done), 0 (deadline) or -1 (database
 * failure throughout).
 */
static char *wait_for(struct store *store, struct waiter *waiter, int check_now, const char *sql,
                      int nparams, const char *const *params,
                      int (*check)(const struct store *store, const char *value), int *outcome)
{
    double deadline = now_ms() + (double)store->wait_ms;
    int failures_only = 1, read_row = check_now, rc = 0;
    char answer[WAITER_ANSWER_MAX];
    char *value = NULL;

    for (;;) {
        double left;

        if (read_row) {
            rc = query_value(store, "wait", sql, nparams, params, &value);
            if (rc >= 0)
                failures_only = 0;
        }
        if (rc > 0 && check(store, value)) {
            *outcome = 1;
            break;
        }
        left = deadline - now_ms();
        if (left <= 0) {
            *outcome = failures_only ? -1 : 0;
            break;
        }
        free(value);
        value = NULL;
        read_row = !waiter_wait(
            store->waiters, waiter,
            (long)(left < (double)store->recheck_ms ? left + 1 : (double)store->recheck_ms), answer,
            sizeof(answer));
        if (!read_row) {
            value = strdup(answer);
            rc = value != NULL;
        }
    }
    return value;
}

static int found(const struct store *store, const char *value)
{
    (void)store;
    return value != NULL;
}

static void restock_admitted(struct store *store, struct store_reply *reply)
{
    cJSON *payload;
    char level[24], *before = NULL, *value;
    struct waiter waiter;
    int outcome, rc;

    /* The restock is confirmed when the read model shows more stock ever
     * restocked than now, or the level already reached (a restock to a level
     * already there changes nothing). Concurrent purchases may take the level
     * down again before anyone looks, so the level alone cannot confirm it. */
    rc = query_value(store, "restocked before",
                     "SELECT restocked::text FROM products WHERE product_id = 1", 0, NULL, &before);
    if (rc < 0) {
        reply_text(reply, 503, "Database unavailable, restock not sent\n");
        return;
    }
    payload = cJSON_CreateObject();
    cJSON_AddNumberToObject(payload, "product_id", WIDGET_PRODUCT_ID);
    cJSON_AddNumberToObject(payload, "inventory", (double)store->restock_level);
    if (send_command(store, NULL, NULL, TOPIC_INVENTORY_COMMANDS, "product-1", MSG_RESTOCK,
                     payload) < 0) {
        free(before);
        reply_text(reply, 503, "Database unavailable, restock not sent\n");
        return;
    }
    snprintf(level, sizeof(level), "%ld", store->restock_level);
    const char *params[] = {before ? before : "-1", level};
    waiter_register(store->waiters, &waiter, "product:1");
    value = wait_for(store, &waiter, 1,
                     "SELECT 1 FROM products WHERE product_id = 1 "
                     "AND (restocked > $1::bigint OR inventory >= $2::int)",
                     2, params, found, &outcome);
    waiter_unregister(store->waiters, &waiter);
    free(before);
    free(value);
    if (outcome == 1)
        reply_json(reply, "{\"message\":\"Restocked successfully\"}");
    else
        reply_text(reply, 504, "Restock sent but not confirmed yet\n");
}

/* Where field n of an order answer (ORDER_ANSWER_SQL: 0 payment id,
 * 1 status, 2 order id, 3 reason, which runs to the end) starts; each but
 * the reason ends at the next '|'. NULL when the answer has no such field. */
static const char *answer_field(const char *answer, int n)
{
    for (int i = 0; answer != NULL && i < n; i++) {
        answer = strchr(answer, '|');
        if (answer != NULL)
            answer++;
    }
    return answer;
}

/* The order status in an answer; 1 when found, 0 if malformed. */
static int answer_status(const char *answer, long long *status)
{
    const char *text = answer ? answer_field(answer, 1) : NULL;
    char *end;

    if (text == NULL)
        return 0;
    errno = 0;
    *status = strtoll(text, &end, 10);
    return errno == 0 && end != text && *end == '|';
}

/* Replies 200 with field n (not the reason) of a well-formed answer. */
static void reply_answer_field(struct store_reply *reply, const char *answer, int n)
{
    const char *field = answer_field(answer, n);
    char text[WAITER_ANSWER_MAX];

    snprintf(text, sizeof(text), "%.*s", (int)strcspn(field, "|"), field);
    reply_text(reply, 200, text);
}

/* Checkout is answered by a payment id, or a cancellation without one (out
 * of stock). */
static int checkout_decided(const struct store *store, const char *value)
{
    long long status;

    (void)store;
    return answer_status(value, &status) && (value[0] != '|' || status == ORDER_CANCELLED);
}

static void checkout_admitted(struct store *store, const char *key, struct store_reply *reply)
{
    char wait_key[WAITER_KEY_MAX];
    struct waiter waiter;
    cJSON *payload;
    int sent, outcome;
    char *value;

    if (!store_valid_key(key)) {
        reply_text(reply, 400,
                   "Invalid idempotency key: use 1 to 100 characters of A-Z a-z 0-9 - _ . :\n");
        return;
    }
    snprintf(wait_key, sizeof(wait_key), "order:%s", key);
    waiter_register(store->waiters, &waiter, wait_key);
    payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "idempotency_key", key);
    cJSON_AddNumberToObject(payload, "product_id", WIDGET_PRODUCT_ID);
    /* The first request for a key sends the command; repeats only wait. */
    sent = send_command(store,
                        "INSERT INTO checkout_requests (idempotency_key) VALUES ($1) "
                        "ON CONFLICT DO NOTHING",
                        key, TOPIC_CHECKOUT_COMMANDS, key, MSG_CHECKOUT_REQUESTED, payload);
    if (sent < 0) {
        waiter_unregister(store->waiters, &waiter);
        reply_text(reply, 503,
                   "Database unavailable, checkout not started; retry with the same "
                   "key\n");
        return;
    }
    /* A key seen for the first time has no order before its command is
     * handled, so only a repeat looks at the read model before waiting. */
    value = wait_for(store, &waiter, sent == 0,
                     "SELECT " ORDER_ANSWER_SQL " FROM orders WHERE idempotency_key = $1", 1, &key,
                     checkout_decided, &outcome);
    waiter_unregister(store->waiters, &waiter);
    if (outcome == 1 && value[0] != '|') {
        reply_answer_field(reply, value, 0);
    } else if (outcome == 1) {
        const char *reason = answer_field(value, 3);
        char message[256];

        snprintf(message, sizeof(message), "Checkout failed: %s\n",
                 reason && reason[0] ? reason : "order cancelled");
        reply_text(reply, 409, message);
    } else {
        reply_text(reply, 504, "Checkout still in progress; retry with the same key\n");
    }
    free(value);
}

static int order_decided(const struct store *store, const char *value)
{
    long long status;

    (void)store;
    return answer_status(value, &status) && status != ORDER_PENDING;
}

static void webhook_admitted(struct store *store, const char *payment_id, const char *status,
                             struct store_reply *reply)
{
    const char *params[] = {payment_id};
    char wait_key[WAITER_KEY_MAX];
    struct waiter waiter;
    char *key = NULL, *value;
    cJSON *payload;
    int rc, outcome;

    if (!envelope_is_uuid(payment_id)) {
        reply_text(reply, 400, "Invalid payment ID: expected a UUID\n");
        return;
    }
    if (!store_valid_status(status)) {
        reply_text(reply, 400, "Invalid payment status: use paid, or failed\n");
        return;
    }
    rc = query_value(store, "payment lookup",
                     "SELECT idempotency_key FROM orders WHERE payment_id = $1", 1, params, &key);
    if (rc < 0) {
        reply_text(reply, 503, "Database unavailable, try again\n");
        return;
    }
    if (rc == 0 || key == NULL) {
        free(key);
        reply_text(reply, 404, "Unknown payment ID\n");
        return;
    }
    snprintf(wait_key, sizeof(wait_key), "order:%s", key);
    waiter_register(store->waiters, &waiter, wait_key);
    payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "payment_id", payment_id);
    cJSON_AddStringToObject(payload, "status", strcmp(status, "paid") == 0 ? "paid" : "failed");
    rc = send_command(store, NULL, NULL, TOPIC_PAYMENT_COMMANDS, key, MSG_PROVIDER_RESULT, payload);
    free(key);
    if (rc < 0) {
        waiter_unregister(store->waiters, &waiter);
        reply_text(reply, 503, "Database unavailable, payment result not recorded\n");
        return;
    }
    /* The order may be decided already (a repeated webhook). */
    value =
        wait_for(store, &waiter, 1, "SELECT " ORDER_ANSWER_SQL " FROM orders WHERE payment_id = $1",
                 1, &payment_id, order_decided, &outcome);
    waiter_unregister(store->waiters, &waiter);
    if (outcome == 1) {
        reply_answer_field(reply, value, 2);
    } else {
        reply_text(reply, 504, "Payment recorded; order not decided yet\n");
    }
    free(value);
}

void store_restock(struct store *store, struct store_reply *reply)
{
    if (!enter(store, reply))
        return;
    restock_admitted(store, reply);
    leave(store);
}

void store_checkout(struct store *store, const char *key, struct store_reply *reply)
{
    if (!enter(store, reply))
        return;
    checkout_admitted(store, key, reply);
    leave(store);
}

void store_webhook(struct store *store, const char *payment_id, const char *status,
                   struct store_reply *reply)
{
    if (!enter(store, reply))
        return;
    webhook_admitted(store, payment_id, status, reply);
    leave(store);
}
