/*
 * stock.c - inventory.commands handler. Every command is idempotent by order
 * id as well as by message id: a repeated reserve answers with the earlier
 * outcome instead of taking stock twice, and a release or commit acts only on
 * a reservation in the right state.
 */
#define _POSIX_C_SOURCE 200809L
#include "stock.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contracts.h"
#include "crashpoint.h"
#include "db.h"
#include "log.h"
#include "payload.h"

const char *const stock_handled_types[] = {MSG_RESTOCK, MSG_RESERVE_STOCK, MSG_RELEASE_STOCK,
                                           MSG_COMMIT_STOCK, NULL};

#define SERVICE "inventory"

/* The columns emit_product_row() reads, in its order. */
#define PRODUCT_COLUMNS                                                                            \
    "product_id, name, description, price::text, available, reserved, sold, initial, restocked, "  \
    "version"

/* Emits a product_updated snapshot from row 0 of res (PRODUCT_COLUMNS),
 * carrying restock_id when it answers that restock. Returns 0 or -1. */
static int emit_product_row(PGconn *conn, const struct consumer_message *msg, const PGresult *res,
                            const char *restock_id)
{
    cJSON *payload = cJSON_CreateObject();
    char key[32];

    cJSON_AddNumberToObject(payload, "product_id", atoi(PQgetvalue(res, 0, 0)));
    cJSON_AddStringToObject(payload, "product", PQgetvalue(res, 0, 1));
    cJSON_AddStringToObject(payload, "description", PQgetvalue(res, 0, 2));
    cJSON_AddStringToObject(payload, "price", PQgetvalue(res, 0, 3));
    cJSON_AddNumberToObject(payload, "inventory", atoi(PQgetvalue(res, 0, 4)));
    cJSON_AddNumberToObject(payload, "reserved", atoi(PQgetvalue(res, 0, 5)));
    cJSON_AddNumberToObject(payload, "sold", atoi(PQgetvalue(res, 0, 6)));
    cJSON_AddNumberToObject(payload, "initial", atoi(PQgetvalue(res, 0, 7)));
    cJSON_AddNumberToObject(payload, "restocked", atoi(PQgetvalue(res, 0, 8)));
    cJSON_AddNumberToObject(payload, "version", atof(PQgetvalue(res, 0, 9)));
    if (restock_id)
        cJSON_AddStringToObject(payload, "restock_id", restock_id);
    snprintf(key, sizeof(key), "product-%s", PQgetvalue(res, 0, 0));
    return payload_emit(conn, TOPIC_INVENTORY_EVENTS, key, MSG_PRODUCT_UPDATED, SERVICE, msg, key,
                        payload);
}

/*
 * Runs a stock change (an UPDATE of products RETURNING PRODUCT_COLUMNS) and,
 * when it changed the product, emits the new snapshot (with restock_id, when
 * not NULL). Returns 1 when a row changed, 0 when none did, -1 on failure.
 * price (capacity 32), when not NULL, gets the unit price.
 */
static int change_stock(PGconn *conn, const struct consumer_message *msg, const char *what,
                        const char *sql, int nparams, const char *const *params, char *price,
                        const char *restock_id)
{
    PGresult *res = db_query(conn, what, sql, nparams, params);
    int changed;

    if (res == NULL)
        return -1;
    changed = PQntuples(res) == 1;
    if (changed && price)
        snprintf(price, 32, "%s", PQgetvalue(res, 0, 3));
    if (changed && emit_product_row(conn, msg, res, restock_id) != 0)
        changed = -1;
    PQclear(res);
    return changed;
}

/* Emits a reply about order_id (stock_reserved, stock_rejected, ...). A
 * stock_reserved reply carries the unit price, which inventory owns: given,
 * or read from the reservation when unit_price is NULL. */
static int emit_reply(PGconn *conn, const struct consumer_message *msg, const char *type,
                      long long order_id, const char *reason, const char *unit_price,
                      const char *quantity)
{
    cJSON *payload = cJSON_CreateObject();

    cJSON_AddNumberToObject(payload, "order_id", (double)order_id);
    if (strcmp(type, MSG_STOCK_RESERVED) == 0 && unit_price != NULL) {
        cJSON_AddStringToObject(payload, "unit_price", unit_price);
        cJSON_AddNumberToObject(payload, "quantity", atoi(quantity));
    } else if (strcmp(type, MSG_STOCK_RESERVED) == 0) {
        char order_text[32];
        const char *params[] = {order_text};
        PGresult *res;

        snprintf(order_text, sizeof(order_text), "%lld", order_id);
        res = db_query(conn, "reservation price",
                       "SELECT p.price::text, r.quantity FROM reservations r "
                       "JOIN products p USING (product_id) WHERE r.order_id = $1::bigint",
                       1, params);
        if (res == NULL) {
            cJSON_Delete(payload);
            return -1;
        }
        if (PQntuples(res) == 1) {
            cJSON_AddStringToObject(payload, "unit_price", PQgetvalue(res, 0, 0));
            cJSON_AddNumberToObject(payload, "quantity", atoi(PQgetvalue(res, 0, 1)));
        }
        PQclear(res);
    }
    if (reason)
        cJSON_AddStringToObject(payload, "reason", reason);
    return payload_emit(conn, TOPIC_INVENTORY_EVENTS, msg->key, type, SERVICE, msg, NULL, payload);
}

/* Locks and reads the reservation of order_id. Returns 1 and fills status
 * (and product/quantity) if it exists, 0 if not, -1 on failure. */
static int load_reservation(PGconn *conn, const char *order_id, char *status, size_t cap,
                            char *product_id, char *quantity)
{
    const char *params[] = {order_id};
    PGresult *res = db_query(conn, "reservation read",
                             "SELECT status, product_id, quantity FROM reservations "
                             "WHERE order_id = $1::bigint FOR UPDATE",
                             1, params);
    int found;

    if (res == NULL)
        return -1;
    found = PQntuples(res) == 1;
    if (found) {
        snprintf(status, cap, "%s", PQgetvalue(res, 0, 0));
        snprintf(product_id, 16, "%s", PQgetvalue(res, 0, 1));
        snprintf(quantity, 16, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return found;
}

static int reserve(PGconn *conn, const struct consumer_message *msg, long long order,
                   const char *order_id)
{
    long long product = WIDGET_PRODUCT_ID, quantity = 1;
    char status[16], product_id[16], quantity_text[16];
    int found;

    payload_int(msg->env->payload, "product_id", &product);
    payload_int(msg->env->payload, "quantity", &quantity);
    if (quantity < 1 || quantity > 1000)
        return emit_reply(conn, msg, MSG_STOCK_REJECTED, order, "invalid quantity", NULL, NULL);
    found = load_reservation(conn, order_id, status, sizeof(status), product_id, quantity_text);
    if (found < 0)
        return -1;
    if (found) {
        /* Asked again: answer as the first time. */
        if (strcmp(status, "reserved") == 0 || strcmp(status, "committed") == 0)
            return emit_reply(conn, msg, MSG_STOCK_RESERVED, order, NULL, NULL, NULL);
        return emit_reply(conn, msg, MSG_STOCK_REJECTED, order,
                          strcmp(status, "released") == 0 ? "reservation already released"
                                                          : "out of stock",
                          NULL, NULL);
    }
    snprintf(product_id, sizeof(product_id), "%lld", product);
    snprintf(quantity_text, sizeof(quantity_text), "%lld", quantity);
    {
        const char *params[] = {product_id, quantity_text};
        char price[32];
        int reserved = change_stock(conn, msg, "reserve",
                                    "UPDATE products SET available = available - $2::int, "
                                    "reserved = reserved + $2::int, version = version + 1 "
                                    "WHERE product_id = $1::int AND available >= $2::int "
                                    "RETURNING " PRODUCT_COLUMNS,
                                    2, params, price, NULL);

        if (reserved < 0)
            return -1;
        const char *insert[] = {order_id, product_id, quantity_text,
                                reserved ? "reserved" : "rejected",
                                reserved ? NULL : "out of stock"};
        if (db_exec_later(conn, "reservation insert",
                          "INSERT INTO reservations (order_id, product_id, quantity, status, "
                          "reason) VALUES ($1::bigint, $2::int, $3::int, $4, $5)",
                          5, insert) != 0)
            return -1;
        if (!reserved) {
            log_info("msg=\"out of stock\" order_id=%s saga_id=%s", order_id, msg->env->saga_id);
            return emit_reply(conn, msg, MSG_STOCK_REJECTED, order, "out of stock", NULL, NULL);
        }
        crashpoint("inventory.after_reserve");
        return emit_reply(conn, msg, MSG_STOCK_RESERVED, order, NULL, price, quantity_text);
    }
}

/* Moves a reserved reservation to release or commit it. */
static int settle(PGconn *conn, const struct consumer_message *msg, long long order,
                  const char *order_id, int commit)
{
    char status[16], product_id[16] = "", quantity[16] = "";
    const char *reply = commit ? MSG_STOCK_COMMITTED : MSG_STOCK_RELEASED;
    int found = load_reservation(conn, order_id, status, sizeof(status), product_id, quantity);

    if (found < 0)
        return -1;
    if (!found) {
        if (commit) {
            log_warn("msg=\"commit of an unknown reservation ignored\" order_id=%s", order_id);
            return CONSUMER_SKIP;
        }
        /* A release before any reserve: remember it, so a late reserve for
         * this order cannot take stock any more. */
        const char *params[] = {order_id};
        if (db_exec(conn, "reservation tombstone",
                    "INSERT INTO reservations (order_id, product_id, quantity, status, reason) "
                    "VALUES ($1::bigint, 1, 1, 'released', 'released before reserved')",
                    1, params) != 0)
            return -1;
        return emit_reply(conn, msg, reply, order, NULL, NULL, NULL);
    }
    if (strcmp(status, "reserved") != 0) {
        /* Already settled, or rejected: answer without touching stock. */
        if (commit && strcmp(status, "committed") != 0)
            log_warn("msg=\"commit of a reservation that is %s\" order_id=%s", status, order_id);
        return emit_reply(conn, msg, reply, order, NULL, NULL, NULL);
    }
    {
        const char *params[] = {product_id, quantity};
        const char *sql = commit ? "UPDATE products SET reserved = reserved - $2::int, "
                                   "sold = sold + $2::int, version = version + 1 "
                                   "WHERE product_id = $1::int RETURNING " PRODUCT_COLUMNS
                                 : "UPDATE products SET reserved = reserved - $2::int, "
                                   "available = available + $2::int, version = version + 1 "
                                   "WHERE product_id = $1::int RETURNING " PRODUCT_COLUMNS;
        const char *update[] = {order_id, commit ? "committed" : "released"};

        if (db_exec_later(conn, "settle reservation",
                          "UPDATE reservations SET status = $2, updated_at = now() "
                          "WHERE order_id = $1::bigint",
                          2, update) != 0 ||
            change_stock(conn, msg, "settle stock", sql, 2, params, NULL, NULL) < 0)
            return -1;
    }
    return emit_reply(conn, msg, reply, order, NULL, NULL, NULL);
}

/* Raises the product's stock to the level asked, and answers with a
 * snapshot carrying the command's restock_id (when it has one), which the api
 * waits for. Returns 0, -1 when the database failed, or -2 with a reason in
 * err when the message is bad: a product id or level missing, not a whole
 * number, or out of range, or a restock_id that is not a UUID. */
static int restock(PGconn *conn, const struct consumer_message *msg, char *err, size_t errlen)
{
    const char *restock_id;
    long long product, level;
    char product_id[16], level_text[16];

    if (payload_int(msg->env->payload, "product_id", &product) != 0 || product < 1 ||
        product > INT_MAX) {
        snprintf(err, errlen, "restock without a valid product_id");
        return -2;
    }
    if (payload_int(msg->env->payload, "inventory", &level) != 0 || level < 0 || level > 1000000) {
        snprintf(err, errlen, "restock without an inventory level in 0-1000000");
        return -2;
    }
    if (payload_optional_uuid(msg->env->payload, "restock_id", &restock_id) != 0) {
        snprintf(err, errlen, "restock with a restock_id that is not a UUID");
        return -2;
    }
    snprintf(product_id, sizeof(product_id), "%lld", product);
    snprintf(level_text, sizeof(level_text), "%lld", level);
    const char *params[] = {product_id, level_text};
    /* Only ever adds stock: what is reserved or sold stays accounted for. */
    switch (change_stock(conn, msg, "restock",
                         "UPDATE products SET restocked = restocked + ($2::int - available), "
                         "available = $2::int, version = version + 1 "
                         "WHERE product_id = $1::int AND available < $2::int "
                         "RETURNING " PRODUCT_COLUMNS,
                         2, params, NULL, restock_id)) {
    case -1:
        return -1;
    case 0:
        /* Already at or above the level: the current snapshot confirms it. */
        return change_stock(conn, msg, "product snapshot",
                            "SELECT " PRODUCT_COLUMNS " FROM products WHERE product_id = $1::int",
                            1, params, NULL, restock_id) < 0
                   ? -1
                   : 0;
    default:
        log_info("msg=\"restocked\" product_id=%s level=%s", product_id, level_text);
        return 0;
    }
}

int stock_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                 size_t errlen)
{
    const char *type = msg->env->type;
    long long order = 0;
    char order_id[32];
    int rc;

    (void)arg;
    if (strcmp(type, MSG_RESTOCK) == 0) {
        rc = restock(conn, msg, err, errlen);
        return rc == 0 ? CONSUMER_OK : rc == -2 ? CONSUMER_FAIL : consumer_db_failure(conn);
    }
    if (strcmp(type, MSG_RESERVE_STOCK) != 0 && strcmp(type, MSG_RELEASE_STOCK) != 0 &&
        strcmp(type, MSG_COMMIT_STOCK) != 0)
        return CONSUMER_SKIP;
    if (payload_positive_id(msg->env->payload, "order_id", &order, order_id, sizeof(order_id))) {
        snprintf(err, errlen, "%s without a valid order_id", type);
        return CONSUMER_FAIL;
    }
    if (strcmp(type, MSG_RESERVE_STOCK) == 0)
        rc = reserve(conn, msg, order, order_id);
    else
        rc = settle(conn, msg, order, order_id, strcmp(type, MSG_COMMIT_STOCK) == 0);
    if (rc == CONSUMER_SKIP)
        return CONSUMER_SKIP;
    if (rc != 0) {
        snprintf(err, errlen, "database failure (SQLSTATE %s)", db_last_sqlstate());
        return consumer_db_failure(conn);
    }
    return CONSUMER_OK;
}
