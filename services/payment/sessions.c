/*
 * sessions.c - payment.commands handler. Each payment row is locked while it
 * changes, and every transition checks the current status, so repeats and
 * races (a provider result against a cancellation) are decided once.
 */
#define _POSIX_C_SOURCE 200809L
#include "sessions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "contracts.h"
#include "crashpoint.h"
#include "db.h"
#include "envelope.h"
#include "log.h"
#include "payload.h"

const char *const sessions_handled_types[] = {MSG_PROVIDER_RESULT, MSG_CREATE_PAYMENT,
                                              MSG_CANCEL_PAYMENT, NULL};

#define SERVICE "payment"

static int emit(PGconn *conn, const struct consumer_message *msg, const char *type,
                const char *order_id, const char *payment_id, const char *outcome)
{
    cJSON *payload = cJSON_CreateObject();

    cJSON_AddNumberToObject(payload, "order_id", atof(order_id));
    cJSON_AddStringToObject(payload, "payment_id", payment_id);
    if (outcome)
        cJSON_AddStringToObject(payload, "outcome", outcome);
    return payload_emit(conn, TOPIC_PAYMENT_EVENTS, msg->key, type, SERVICE, msg, NULL, payload);
}

/*
 * The id of the payment that the create_payment message message_id opens,
 * derived from that message's id: handling the message again (a database
 * restored from a dump, catching up from the topic) opens the same payment as
 * the first time, so the id the customer was shown and the saga holds stays
 * valid. Its first 48 bits are the message id's (its time, as message ids are
 * version 7), so that payments' primary key grows at its right edge; the rest
 * is a SHA-1 of the message id (a version 5 UUID's), whose random bits never
 * leave the broker, so a payment id is no easier to guess than a random one.
 * Marked version 8 (RFC 9562's custom layout).
 */
static void payment_id_of(const char *message_id, char out[ENVELOPE_UUID_LEN + 1])
{
    static const uuid_t payment_ids = {0x6f, 0x1c, 0xc2, 0xd9, 0xce, 0x87, 0x43, 0x50,
                                       0x8e, 0x8a, 0xbf, 0xf2, 0x9d, 0xe0, 0x12, 0x77};
    uuid_t opened_by, raw;

    uuid_generate_sha1(raw, payment_ids, message_id, strlen(message_id));
    if (uuid_parse(message_id, opened_by) == 0) {
        memcpy(raw, opened_by, 6);
        raw[6] = (unsigned char)((raw[6] & 0x0f) | 0x80);
    }
    uuid_unparse_lower(raw, out);
}

static int create_payment(PGconn *conn, const struct consumer_message *msg, const char *order_id)
{
    const char *amount = payload_str(msg->env->payload, "amount");
    char payment_id[ENVELOPE_UUID_LEN + 1];
    PGresult *res;

    /* Never open a payment for an amount nobody gave. */
    if (amount == NULL)
        return CONSUMER_FAIL;
    payment_id_of(msg->env->id, payment_id);
    {
        const char *params[] = {payment_id, order_id, msg->env->saga_id, amount};

        /* One session per order: a repeated request returns the first id. */
        res = db_query(conn, "payment create",
                       "WITH created AS (INSERT INTO payments "
                       "(payment_id, order_id, saga_id, amount, status) "
                       "VALUES ($1::uuid, $2::bigint, $3, $4::numeric, 'pending') "
                       "ON CONFLICT (order_id) DO NOTHING RETURNING payment_id) "
                       "SELECT payment_id::text FROM created UNION ALL "
                       "SELECT payment_id::text FROM payments WHERE order_id = $2::bigint",
                       4, params);
    }
    if (res == NULL)
        return -1;
    if (PQntuples(res) < 1) {
        PQclear(res);
        return -1;
    }
    snprintf(payment_id, sizeof(payment_id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    log_debug("msg=\"payment session\" order_id=%s payment_id=%s saga_id=%s", order_id, payment_id,
              msg->env->saga_id);
    return emit(conn, msg, MSG_PAYMENT_CREATED, order_id, payment_id, NULL);
}

/*
 * Locks a payment: payment_id's or, when payment_id is NULL or "", the one
 * opened for order (at most one). Returns 1 and fills status (16 bytes),
 * order_id (32) and, when not NULL, found_id (ENVELOPE_UUID_LEN + 1); 0 if
 * unknown, -1 on failure.
 */
static int load_payment(PGconn *conn, const char *payment_id, const char *order, char *found_id,
                        char *status, char *order_id)
{
    int by_order = payment_id == NULL || payment_id[0] == '\0';
    const char *params[] = {by_order ? order : payment_id};
    PGresult *res;
    int found;

    if (by_order ? order == NULL : !envelope_is_uuid(payment_id))
        return 0;
    /* Literals, not a formatted buffer: db.c prepares statements by address. */
    res = db_query(conn, "payment read",
                   by_order ? "SELECT payment_id::text, status, order_id FROM payments "
                              "WHERE order_id = $1::bigint FOR UPDATE"
                            : "SELECT payment_id::text, status, order_id FROM payments "
                              "WHERE payment_id = $1::uuid FOR UPDATE",
                   1, params);
    if (res == NULL)
        return -1;
    found = PQntuples(res) == 1;
    if (found) {
        if (found_id != NULL)
            snprintf(found_id, ENVELOPE_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
        snprintf(status, 16, "%s", PQgetvalue(res, 0, 1));
        snprintf(order_id, 32, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return found;
}

static int set_status(PGconn *conn, const char *payment_id, const char *status,
                      const char *provider_result)
{
    const char *params[] = {payment_id, status, provider_result};

    return db_exec_later(conn, "payment update",
                         "UPDATE payments SET status = $2, "
                         "provider_result = coalesce(provider_result, $3), "
                         "captured_at = CASE WHEN $2 IN ('captured', 'refunded') "
                         "THEN coalesce(captured_at, now()) ELSE captured_at END, "
                         "refunded_at = CASE WHEN $2 = 'refunded' THEN now() ELSE refunded_at END, "
                         "updated_at = now() WHERE payment_id = $1::uuid",
                         3, params);
}

static int provider_result(PGconn *conn, const struct consumer_message *msg)
{
    const char *payment_id = payload_str(msg->env->payload, "payment_id");
    const char *result = payload_str(msg->env->payload, "status");
    char status[16], order_id[32];
    int paid = result && strcmp(result, "paid") == 0;
    int found;

    /* Only "paid" or "failed": anything else is not a result to act on. */
    if (payment_id == NULL || result == NULL || (!paid && strcmp(result, "failed") != 0))
        return CONSUMER_FAIL;
    found = load_payment(conn, payment_id, NULL, NULL, status, order_id);
    if (found <= 0) {
        if (found == 0)
            log_warn("msg=\"provider result for an unknown payment ignored\" payment_id=%.40s",
                     payment_id);
        return found == 0 ? CONSUMER_SKIP : -1;
    }
    if (strcmp(status, "pending") == 0) {
        if (set_status(conn, payment_id, paid ? "captured" : "failed", paid ? "paid" : "failed"))
            return -1;
        crashpoint("payment.after_capture");
        log_debug("msg=\"provider result\" payment_id=%s order_id=%s result=%s", payment_id,
                  order_id, paid ? "paid" : "failed");
        return emit(conn, msg, paid ? MSG_PAYMENT_SUCCEEDED : MSG_PAYMENT_FAILED, order_id,
                    payment_id, NULL);
    }
    if (strcmp(status, "cancelled") == 0 && paid) {
        /* The provider took the money after we gave up: give it back. */
        if (set_status(conn, payment_id, "refunded", "paid"))
            return -1;
        log_warn("msg=\"success after cancellation refunded\" payment_id=%s order_id=%s",
                 payment_id, order_id);
        return emit(conn, msg, MSG_PAYMENT_REFUNDED, order_id, payment_id, NULL);
    }
    log_info("msg=\"repeated provider result ignored\" payment_id=%s status=%s", payment_id,
             status);
    return CONSUMER_SKIP;
}

/*
 * Remembers a cancel that came before any payment of the order, as a
 * payment cancelled from the start (amount 0, id derived from the cancel's
 * message id like a created one's): a create_payment handled later, say
 * redriven from the dead-letter topic after the saga gave up, then finds it
 * and opens nothing anyone could pay.
 */
static int remember_cancel(PGconn *conn, const struct consumer_message *msg, const char *order_id)
{
    char payment_id[ENVELOPE_UUID_LEN + 1];
    const char *params[] = {payment_id, order_id, msg->env->saga_id};

    payment_id_of(msg->env->id, payment_id);
    return db_exec_later(conn, "payment cancelled before created",
                         "INSERT INTO payments (payment_id, order_id, saga_id, amount, status) "
                         "VALUES ($1::uuid, $2::bigint, $3, 0, 'cancelled') "
                         "ON CONFLICT DO NOTHING",
                         3, params);
}

/* A cancel without a payment id comes from a saga that asked for the payment
 * but had not heard back: its create command came earlier on the same
 * partition, so the order's payment, if any, is the one to void (and if
 * there is none, the cancel is remembered, see remember_cancel). A cancel
 * "unless_paid" (the saga's payment timeout) leaves a captured payment alone
 * and answers that it succeeded: the money came first, so the order goes on. */
static int cancel_payment(PGconn *conn, const struct consumer_message *msg, const char *order)
{
    const char *payment_id = payload_str(msg->env->payload, "payment_id");
    char status[16], order_id[32], id[ENVELOPE_UUID_LEN + 1];
    const char *outcome;
    int found = load_payment(conn, payment_id, order, id, status, order_id);

    if (found < 0)
        return -1;
    if (found == 0) {
        if ((payment_id == NULL || payment_id[0] == '\0') && remember_cancel(conn, msg, order) != 0)
            return -1;
        return emit(conn, msg, MSG_PAYMENT_VOIDED, order, payment_id ? payment_id : "", "none");
    }
    payment_id = id;
    if (strcmp(status, "captured") == 0 &&
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(msg->env->payload, "unless_paid"))) {
        log_info("msg=\"payment timeout lost the race: already paid\" payment_id=%s order_id=%s",
                 payment_id, order_id);
        return emit(conn, msg, MSG_PAYMENT_SUCCEEDED, order_id, payment_id, NULL);
    }
    if (strcmp(status, "pending") == 0 || strcmp(status, "cancelled") == 0) {
        outcome = "cancelled";
        if (strcmp(status, "pending") == 0 && set_status(conn, payment_id, "cancelled", NULL))
            return -1;
    } else if (strcmp(status, "failed") == 0) {
        outcome = "not_charged";
    } else {
        outcome = "refunded";
        if (strcmp(status, "captured") == 0 && set_status(conn, payment_id, "refunded", NULL))
            return -1;
    }
    log_info("msg=\"payment voided\" payment_id=%s order_id=%s outcome=%s", payment_id, order_id,
             outcome);
    return emit(conn, msg, MSG_PAYMENT_VOIDED, order_id, payment_id, outcome);
}

int sessions_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                    size_t errlen)
{
    const char *type = msg->env->type;
    long long order = 0;
    char order_id[32];
    int rc;

    (void)arg;
    if (strcmp(type, MSG_PROVIDER_RESULT) == 0) {
        rc = provider_result(conn, msg);
    } else if (strcmp(type, MSG_CREATE_PAYMENT) == 0 || strcmp(type, MSG_CANCEL_PAYMENT) == 0) {
        if (payload_positive_id(msg->env->payload, "order_id", &order, order_id,
                                sizeof(order_id))) {
            snprintf(err, errlen, "%s without a valid order_id", type);
            return CONSUMER_FAIL;
        }
        rc = strcmp(type, MSG_CREATE_PAYMENT) == 0 ? create_payment(conn, msg, order_id)
                                                   : cancel_payment(conn, msg, order_id);
    } else {
        return CONSUMER_SKIP;
    }
    if (rc == CONSUMER_FAIL) {
        snprintf(err, errlen, "%s without %s", type,
                 strcmp(type, MSG_CREATE_PAYMENT) == 0
                     ? "an amount"
                     : "a payment_id and a status paid or failed");
        return CONSUMER_FAIL;
    }
    if (rc < 0) {
        snprintf(err, errlen, "database failure (SQLSTATE %s)", db_last_sqlstate());
        return consumer_db_failure(conn);
    }
    return rc == CONSUMER_SKIP ? CONSUMER_SKIP : CONSUMER_OK;
}
