/*
 * store.c - widget-store endpoints over the read model.
 */
#define _POSIX_C_SOURCE 200809L
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
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
    size_t len = strlen(text);
    long long value;
    char *end;

    if (len == 0 || strspn(text, "0123456789") != len)
        return 0;
    errno = 0;
    value = strtoll(text, &end, 10);
    if (errno == ERANGE) {
        *out = LLONG_MAX; /* past bigint: well formed, and no order has it */
        return 1;
    }
    *out = value; /* 0 is well formed too; no order has it */
    return 1;
}

/* query_value()'s answer when the server cancelled the statement after
 * API_DB_TIMEOUT_MS (SQLSTATE 57014): the database is busy, not gone. */
#define QUERY_TIMED_OUT (-2)

/*
 * Runs a one-value query on a pooled connection. Returns 1 and a malloc'd
 * copy of the value in *value (NULL for SQL NULL), 0 when no row,
 * QUERY_TIMED_OUT when the statement ran too long, -1 when the database
 * failed otherwise.
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
        rc = strcmp(db_last_sqlstate(), "57014") == 0 ? QUERY_TIMED_OUT : -1;
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
 * Returns 1 if sent, 0 if the guard said no, -1 on failure (a connection
 * lost during the COMMIT may still have committed, so callers say "may not"). */
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

/* The 503 for a read that query_value() could not make (rc < 0). */
static void reply_read_failed(struct store_reply *reply, int rc)
{
    reply_text(reply, 503,
               rc == QUERY_TIMED_OUT ? "Database busy (query timed out), try again\n"
                                     : "Database unavailable, try again\n");
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
        reply_read_failed(reply, rc);
    else if (rc == 0)
        reply_text(reply, 503, "Product not loaded yet, try again\n");
    else
        reply_json(reply, json);
    free(json);
}

/* An order of the read model as the DBOS store shows it. Before dispatch
 * starts, progress_remaining is the whole count ($1, DISPATCH_STEPS). */
#define ORDER_JSON                                                                                 \
    "json_build_object('order_id', o.order_id, 'order_status', o.order_status, "                   \
    "'last_update_time', o.last_update_time, "                                                     \
    "'progress_remaining', coalesce(p.progress_remaining, $1::int), 'product_id', o.product_id)"

void store_orders(struct store *store, struct store_reply *reply)
{
    char steps[16];
    const char *params[] = {steps};
    char *json = NULL;

    snprintf(steps, sizeof(steps), "%ld", store->dispatch_steps);
    int rc = query_value(store, "orders",
                         "SELECT coalesce(json_agg(" ORDER_JSON " ORDER BY o.order_id DESC), '[]') "
                         "FROM (SELECT * FROM orders ORDER BY order_id DESC LIMIT 1000) o "
                         "LEFT JOIN order_progress p USING (order_id)",
                         1, params, &json);

    if (rc < 0)
        reply_read_failed(reply, rc);
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
        reply_text(reply, 400, STORE_ORDER_ID_INVALID);
        return;
    }
    char steps[16], id_param[32];
    snprintf(steps, sizeof(steps), "%ld", store->dispatch_steps);
    snprintf(id_param, sizeof(id_param), "%lld", id);
    const char *params[] = {steps, id_param};
    rc = query_value(store, "order",
                     "SELECT " ORDER_JSON " FROM orders o LEFT JOIN order_progress p "
                     "USING (order_id) WHERE o.order_id = $2::bigint",
                     2, params, &json);
    if (rc < 0)
        reply_read_failed(reply, rc);
    else if (rc == 0)
        reply_text(reply, 404, STORE_ORDER_NOT_FOUND);
    else
        reply_json(reply, json);
    free(json);
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

/* What a parked call waits for. */
enum call_kind { CALL_RESTOCK, CALL_CHECKOUT, CALL_WEBHOOK };

/* The read-model row each kind checks, with the call's param. The restock
 * is confirmed by inventory's acknowledgement of its own command, not by the
 * level or the stock ever restocked: the read model may lag (an earlier
 * restock's snapshot still on its way) or already show the level, and
 * concurrent purchases may take the level down again before anyone looks. */
static const char *const call_sql[] = {
    [CALL_RESTOCK] = RESTOCK_ACK_SQL,
    [CALL_CHECKOUT] = "SELECT " ORDER_ANSWER_SQL " FROM orders WHERE idempotency_key = $1",
    [CALL_WEBHOOK] = "SELECT " ORDER_ANSWER_SQL " FROM orders WHERE payment_id = $1",
};

/* Whether value (what call_sql read, or a notification's answer) answers
 * the call: a checkout by a payment id, or a cancellation without one (out of
 * stock); a webhook by any decided order; a restock by its row. */
static int call_decided(int kind, const char *value)
{
    long long status;

    if (kind == CALL_RESTOCK)
        return 1;
    if (!answer_status(value, &status))
        return 0;
    if (kind == CALL_CHECKOUT)
        return value[0] != '|' || status == ORDER_CANCELLED;
    return status != ORDER_PENDING;
}

/* The reply to a call: value is the deciding answer, or NULL when the
 * deadline passed (or the server is stopping) first. */
static void call_reply(int kind, const char *value, struct store_reply *reply)
{
    const char *reason;
    char message[256];

    switch (kind) {
    case CALL_RESTOCK:
        if (value != NULL)
            reply_json(reply, "{\"message\":\"Restocked successfully\"}");
        else
            reply_text(reply, 504, "Restock sent but not confirmed yet\n");
        break;
    case CALL_CHECKOUT:
        if (value == NULL) {
            reply_text(reply, 504, "Checkout still in progress; retry with the same key\n");
        } else if (value[0] != '|') {
            reply_answer_field(reply, value, 0);
        } else {
            reason = answer_field(value, 3);
            snprintf(message, sizeof(message), "Checkout failed: %s\n",
                     reason && reason[0] ? reason : "order cancelled");
            reply_text(reply, 409, message);
        }
        break;
    default:
        if (value != NULL)
            reply_answer_field(reply, value, 2);
        else
            reply_text(reply, 504, "Payment recorded; order not decided yet\n");
        break;
    }
}

/*
 * Runs a call's wait until it parks or is answered. The call's waiter was
 * registered before the first look at the row (before its command was sent
 * when check_first is 0), so no change can go unnoticed. Each round checks a
 * value: after a wake-up (woken) the notification's answer, or when it
 * brought none (the re-check interval, several changes at once) the row read
 * again; before the first park, the row only if check_first. Undecided
 * before the deadline, the call parks until the next notification or
 * re-check. Once answered it is over: its waiter is removed and its
 * admission given back. Unless may_query, a round that would read the row
 * stops before it with STORE_NEEDS_DB.
 */
static enum store_step advance(struct store *store, struct store_call *call, int woken,
                               int may_query, struct store_reply *reply)
{
    const char *params[] = {call->param};
    char answer[WAITER_ANSWER_MAX];
    char *value = NULL;

    for (;;) {
        double left;
        int parked;

        if (woken && waiter_take(store->waiters, &call->waiter, answer, sizeof(answer))) {
            value = strdup(answer);
        } else if (woken || call->check_first) {
            if (!may_query)
                return STORE_NEEDS_DB; /* the next call reads the row (woken) */
            query_value(store, "wait", call_sql[call->kind], 1, params, &value);
        }
        if (value != NULL && call_decided(call->kind, value))
            break;
        free(value);
        value = NULL;
        left = call->deadline_ms - backoff_now_ms();
        if (left <= 0)
            break;
        parked = waiter_park(
            store->waiters, &call->waiter,
            (long)(left < (double)store->recheck_ms ? left + 1 : (double)store->recheck_ms),
            call->suspend, call->resume, call->arg);
        if (parked > 0)
            return STORE_PARKED;
        if (parked < 0)
            break; /* the server is stopping */
        woken = 1;
    }
    waiter_unregister(store->waiters, &call->waiter);
    call_reply(call->kind, value, reply);
    free(value);
    leave(store);
    return STORE_REPLIED;
}

/* Starts waiting for a call whose waiter is registered and command sent. */
static enum store_step start_wait(struct store *store, struct store_call *call, int kind,
                                  int check_first, struct store_reply *reply)
{
    call->kind = kind;
    call->check_first = check_first;
    call->deadline_ms = backoff_now_ms() + (double)store->wait_ms;
    return advance(store, call, 0, 1, reply);
}

enum store_step store_restock(struct store *store, struct store_call *call,
                              struct store_reply *reply)
{
    char restock_id[ENVELOPE_UUID_LEN + 1], waiter_key[WAITER_KEY_MAX];
    cJSON *payload;

    if (!enter(store, reply))
        return STORE_REPLIED;
    /* Inventory answers with a snapshot carrying this id, once applied. */
    envelope_new_uuid(restock_id);
    payload = cJSON_CreateObject();
    cJSON_AddNumberToObject(payload, "product_id", WIDGET_PRODUCT_ID);
    cJSON_AddNumberToObject(payload, "inventory", (double)store->restock_level);
    cJSON_AddStringToObject(payload, "restock_id", restock_id);
    if (send_command(store, NULL, NULL, TOPIC_INVENTORY_COMMANDS, "product-1", MSG_RESTOCK,
                     payload) < 0) {
        leave(store);
        reply_text(reply, 503, "Database unavailable, restock may not have been sent; retry\n");
        return STORE_REPLIED;
    }
    snprintf(call->param, sizeof(call->param), "%s", restock_id);
    snprintf(waiter_key, sizeof(waiter_key), "restock:%s", restock_id);
    waiter_register(store->waiters, &call->waiter, waiter_key);
    return start_wait(store, call, CALL_RESTOCK, 1, reply);
}

enum store_step store_checkout(struct store *store, struct store_call *call, const char *key,
                               struct store_reply *reply)
{
    char wait_key[WAITER_KEY_MAX];
    cJSON *payload;
    int sent;

    if (!store_valid_key(key)) {
        reply_text(reply, 400,
                   "Invalid idempotency key: use 1 to 100 characters of A-Z a-z 0-9 - _ . :\n");
        return STORE_REPLIED;
    }
    if (!enter(store, reply))
        return STORE_REPLIED;
    snprintf(call->param, sizeof(call->param), "%s", key);
    snprintf(wait_key, sizeof(wait_key), "order:%s", key);
    waiter_register(store->waiters, &call->waiter, wait_key);
    payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "idempotency_key", key);
    cJSON_AddNumberToObject(payload, "product_id", WIDGET_PRODUCT_ID);
    /* The first request for a key sends the command; repeats only wait. */
    sent = send_command(store,
                        "INSERT INTO checkout_requests (idempotency_key) VALUES ($1) "
                        "ON CONFLICT DO NOTHING",
                        key, TOPIC_CHECKOUT_COMMANDS, key, MSG_CHECKOUT_REQUESTED, payload);
    if (sent < 0) {
        store_abandon(store, call);
        reply_text(reply, 503,
                   "Database unavailable, checkout may not have started; retry with "
                   "the same key\n");
        return STORE_REPLIED;
    }
    /* A key seen for the first time has no order before its command is
     * handled, so only a repeat looks at the read model before waiting. */
    return start_wait(store, call, CALL_CHECKOUT, sent == 0, reply);
}

enum store_step store_webhook(struct store *store, struct store_call *call, const char *given_id,
                              const char *status, struct store_reply *reply)
{
    char payment_id[ENVELOPE_UUID_LEN + 1];
    const char *params[] = {payment_id};
    char wait_key[WAITER_KEY_MAX];
    char *key = NULL;
    cJSON *payload;
    int rc;

    if (!envelope_is_uuid(given_id)) {
        reply_text(reply, 400, "Invalid payment ID: expected a UUID\n");
        return STORE_REPLIED;
    }
    /* A UUID may be written in either case; payment ids are stored in lower. */
    for (size_t i = 0; i <= ENVELOPE_UUID_LEN; i++)
        payment_id[i] = (char)tolower((unsigned char)given_id[i]);
    if (!store_valid_status(status)) {
        reply_text(reply, 400, "Invalid payment status: use paid, or failed\n");
        return STORE_REPLIED;
    }
    if (!enter(store, reply))
        return STORE_REPLIED;
    rc = query_value(store, "payment lookup",
                     "SELECT idempotency_key FROM orders WHERE payment_id = $1", 1, params, &key);
    if (rc < 0 || rc == 0 || key == NULL) {
        free(key);
        leave(store);
        if (rc < 0)
            reply_read_failed(reply, rc);
        else
            reply_text(reply, 404, "Unknown payment ID\n");
        return STORE_REPLIED;
    }
    snprintf(call->param, sizeof(call->param), "%s", payment_id);
    snprintf(wait_key, sizeof(wait_key), "order:%s", key);
    waiter_register(store->waiters, &call->waiter, wait_key);
    payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "payment_id", payment_id);
    cJSON_AddStringToObject(payload, "status", strcmp(status, "paid") == 0 ? "paid" : "failed");
    rc = send_command(store, NULL, NULL, TOPIC_PAYMENT_COMMANDS, key, MSG_PROVIDER_RESULT, payload);
    free(key);
    if (rc < 0) {
        store_abandon(store, call);
        reply_text(reply, 503, "Database unavailable, payment result may not be recorded; retry\n");
        return STORE_REPLIED;
    }
    /* The order may be decided already (a repeated webhook). */
    return start_wait(store, call, CALL_WEBHOOK, 1, reply);
}

enum store_step store_resume(struct store *store, struct store_call *call, int may_query,
                             struct store_reply *reply)
{
    return advance(store, call, 1, may_query, reply);
}

void store_abandon(struct store *store, struct store_call *call)
{
    waiter_unregister(store->waiters, &call->waiter);
    leave(store);
}
