/*
 * projections.c - applies snapshots to the read model. Snapshots carry a
 * version and only replace older ones, and progress only moves down, so
 * duplicates, replays and out-of-order delivery leave the newest state.
 */
#define _POSIX_C_SOURCE 200809L
#include "projections.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "contracts.h"
#include "db.h"
#include "envelope.h"
#include "payload.h"
#include "store.h"
#include "waiters.h"

/* How long a restock's ack is kept: far past any call's wait (API_WAIT_MS is
 * 10 minutes at most). An SQL interval, spliced into the statements. */
#define RESTOCK_ACK_KEPT "interval '1 day'"

const char *const projections_handled_types[] = {MSG_ORDER_UPDATED, MSG_PRODUCT_UPDATED,
                                                 MSG_DISPATCH_PROGRESS, NULL};

/* Writes the order's answer (ORDER_ANSWER_SQL) into out (len bytes).
 * Returns 0, or -1 when it does not fit. payment_id and reason may be NULL. */
static int order_answer(char *out, size_t len, const char *payment_id, long long status,
                        long long order_id, const char *reason)
{
    int n = snprintf(out, len, "%s|%lld|%lld|%s", payment_id ? payment_id : "", status, order_id,
                     reason ? reason : "");

    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Queues an upsert (db_exec_later: it travels with the COMMIT) and the
 * read-model notification "<prefix><key>", followed by " <answer>" when
 * answer is not NULL, for after the commit. A snapshot older than the row
 * changes nothing, and its notification makes the waiters look at an older
 * answer, which the waits' checks accept only if it was already final.
 * Returns 0 or -1. */
static int upsert_and_notify(PGconn *conn, const char *what, const char *prefix, const char *key,
                             const char *answer, const char *sql, int nparams,
                             const char *const *params)
{
    char payload[DB_NOTIFY_PAYLOAD_MAX];

    if (db_exec_later(conn, what, sql, nparams, params) != 0)
        return -1;
    /* Too long to carry the answer: the key alone wakes the waiters, who
     * then read the row. */
    if (answer == NULL ||
        snprintf(payload, sizeof(payload), "%s%s %s", prefix, key, answer) >= (int)sizeof(payload))
        snprintf(payload, sizeof(payload), "%s%s", prefix, key);
    db_notify_after_commit(conn, WAITERS_CHANNEL, payload);
    return 0;
}

/* Projections return 0, -1 on a database failure, or CONSUMER_FAIL with the
 * reason in *why. Only what the producers send is accepted: a snapshot that
 * passes reaches the read model and the waiters' notifications unchanged, so
 * a key or payment id that could break their "KEY ANSWER" and '|' format, or
 * a status no order can have, is refused (and dead-lettered), not stored. */
static int project_order(PGconn *conn, const cJSON *p, const char **why)
{
    long long order_id, product_id, status, version;
    const char *key = payload_str(p, "idempotency_key");
    const char *payment_id = payload_str(p, "payment_id");
    const char *reason = payload_str(p, "reason");
    const char *updated = payload_str(p, "last_update_time");
    char order_text[32], product_text[16], status_text[8], version_text[32];
    char answer[WAITER_ANSWER_MAX];

    if (payload_int(p, "order_id", &order_id) != 0 || payload_int(p, "product_id", &product_id) ||
        payload_int(p, "order_status", &status) || payload_int(p, "version", &version) ||
        key == NULL || updated == NULL) {
        *why = "a field is missing or of the wrong type";
        return CONSUMER_FAIL;
    }
    if (!store_valid_key(key)) {
        *why = "idempotency_key is not a valid key";
        return CONSUMER_FAIL;
    }
    if (payment_id != NULL && !envelope_is_uuid(payment_id)) {
        *why = "payment_id is not a UUID";
        return CONSUMER_FAIL;
    }
    if (status < ORDER_CANCELLED || status > ORDER_PAID) {
        *why = "order_status is not an order status";
        return CONSUMER_FAIL;
    }
    if (order_id < 1 || product_id < 1 || product_id > INT32_MAX || version < 1) {
        *why = "order_id, product_id or version out of range";
        return CONSUMER_FAIL;
    }
    snprintf(order_text, sizeof(order_text), "%lld", order_id);
    snprintf(product_text, sizeof(product_text), "%lld", product_id);
    snprintf(status_text, sizeof(status_text), "%lld", status);
    snprintf(version_text, sizeof(version_text), "%lld", version);
    const char *params[] = {order_text, key,    product_text, status_text,
                            payment_id, reason, updated,      version_text};
    /* Waiting HTTP threads (of any replica) are woken by a notification,
     * sent after the commit. */
    return upsert_and_notify(
        conn, "project order", "order:", key,
        order_answer(answer, sizeof(answer), payment_id, status, order_id, reason) == 0 ? answer
                                                                                        : NULL,
        "INSERT INTO orders (order_id, idempotency_key, product_id, order_status, "
        "payment_id, reason, last_update_time, version) VALUES ($1::bigint, $2, "
        "$3::int, $4::int, $5, $6, $7::timestamptz, $8::bigint) "
        "ON CONFLICT (order_id) DO UPDATE SET order_status = excluded.order_status, "
        "payment_id = excluded.payment_id, reason = excluded.reason, "
        "last_update_time = excluded.last_update_time, version = excluded.version "
        "WHERE orders.version < excluded.version",
        8, params);
}

static int project_product(PGconn *conn, const cJSON *p, const char *occurred_at, const char **why)
{
    long long product_id, inventory, version, restocked = 0;
    const char *name = payload_str(p, "product");
    const char *description = payload_str(p, "description");
    const char *price = payload_str(p, "price");
    const char *restock_id;
    char id_text[16], inventory_text[16], version_text[32], restocked_text[32];

    if (payload_int(p, "product_id", &product_id) || payload_int(p, "inventory", &inventory) ||
        payload_int(p, "version", &version) || !name || !description || !price) {
        *why = "a field is missing or of the wrong type";
        return CONSUMER_FAIL;
    }
    if (product_id < 1 || product_id > INT32_MAX || inventory < 0 || inventory > INT32_MAX ||
        version < 1) {
        *why = "product_id, inventory or version out of range";
        return CONSUMER_FAIL;
    }
    if (payload_optional_uuid(p, "restock_id", &restock_id) != 0) {
        *why = "restock_id is not a UUID";
        return CONSUMER_FAIL;
    }
    snprintf(id_text, sizeof(id_text), "%lld", product_id);
    snprintf(inventory_text, sizeof(inventory_text), "%lld", inventory);
    /* Absent from snapshots written before it existed. */
    payload_int(p, "restocked", &restocked);
    snprintf(version_text, sizeof(version_text), "%lld", version);
    snprintf(restocked_text, sizeof(restocked_text), "%lld", restocked);
    const char *params[] = {id_text,        name,         description,   price,
                            inventory_text, version_text, restocked_text};
    if (db_exec_later(conn, "project product",
                      "INSERT INTO products (product_id, product, description, "
                      "price, inventory, version, restocked) VALUES ($1::int, $2, $3, "
                      "$4::numeric, $5::int, $6::bigint, $7::bigint) "
                      "ON CONFLICT (product_id) DO UPDATE SET product = excluded.product, "
                      "description = excluded.description, price = excluded.price, "
                      "inventory = excluded.inventory, version = excluded.version, "
                      "restocked = excluded.restocked "
                      "WHERE products.version < excluded.version",
                      7, params) != 0)
        return -1;
    if (restock_id == NULL)
        return 0;
    /* The snapshot answers a restock: acknowledged even when it changed
     * nothing (the level was already there), and the call waiting for it
     * (in any replica) is woken. Acks over a day old are waited for by no
     * call (API_WAIT_MS is 10 minutes at most) and go; a snapshot over a day
     * old (a replay) leaves none, so a replay brings no pruned ack back. */
    const char *ack_params[] = {restock_id, occurred_at};
    if (db_exec_later(conn, "prune restock acks",
                      "DELETE FROM restock_acks WHERE projected_at < now() - " RESTOCK_ACK_KEPT, 0,
                      NULL) != 0)
        return -1;
    return upsert_and_notify(conn, "project restock ack", "restock:", restock_id, RESTOCK_APPLIED,
                             "INSERT INTO restock_acks (restock_id) SELECT $1::uuid "
                             "WHERE $2::timestamptz >= now() - " RESTOCK_ACK_KEPT " "
                             "ON CONFLICT (restock_id) DO NOTHING",
                             2, ack_params);
}

static int project_progress(PGconn *conn, const cJSON *p, const char **why)
{
    long long order_id, remaining;
    char order_text[32], remaining_text[16];

    if (payload_int(p, "order_id", &order_id) || payload_int(p, "progress_remaining", &remaining)) {
        *why = "a field is missing or of the wrong type";
        return CONSUMER_FAIL;
    }
    if (order_id < 1 || remaining < 0 || remaining > INT32_MAX) {
        *why = "order_id or progress_remaining out of range";
        return CONSUMER_FAIL;
    }
    snprintf(order_text, sizeof(order_text), "%lld", order_id);
    snprintf(remaining_text, sizeof(remaining_text), "%lld", remaining);
    const char *params[] = {order_text, remaining_text};
    return db_exec_later(conn, "project progress",
                         "INSERT INTO order_progress (order_id, progress_remaining) "
                         "VALUES ($1::bigint, $2::int) ON CONFLICT (order_id) DO UPDATE "
                         "SET progress_remaining = least(order_progress.progress_remaining, "
                         "excluded.progress_remaining)",
                         2, params);
}

int projections_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                       size_t errlen)
{
    const char *type = msg->env->type, *why = "";
    int rc;

    (void)arg;
    if (strcmp(type, MSG_ORDER_UPDATED) == 0)
        rc = project_order(conn, msg->env->payload, &why);
    else if (strcmp(type, MSG_PRODUCT_UPDATED) == 0)
        rc = project_product(conn, msg->env->payload, msg->env->occurred_at, &why);
    else if (strcmp(type, MSG_DISPATCH_PROGRESS) == 0)
        rc = project_progress(conn, msg->env->payload, &why);
    else
        return CONSUMER_SKIP;
    if (rc == CONSUMER_FAIL) {
        snprintf(err, errlen, "malformed %s payload: %s", type, why);
        return CONSUMER_FAIL;
    }
    if (rc != 0) {
        snprintf(err, errlen, "database failure (SQLSTATE %s)", db_last_sqlstate());
        return consumer_db_failure(conn);
    }
    return CONSUMER_OK;
}
