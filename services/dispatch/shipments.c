/*
 * shipments.c - start shipments, and advance them: each step is one
 * transaction that lowers progress_remaining, schedules the next step and
 * writes the progress event to the outbox, so a crash repeats no step and
 * skips none.
 */
#define _POSIX_C_SOURCE 200809L
#include "shipments.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contracts.h"
#include "crashpoint.h"
#include "db.h"
#include "log.h"
#include "payload.h"

const char *const shipments_handled_types[] = {MSG_START_DISPATCH, NULL};

#define SERVICE    "dispatch"
#define TICK_BATCH "50"

int shipments_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                     size_t errlen)
{
    const struct shipments_config *cfg = arg;
    char order_id[32], steps[16], interval[32];
    long long order;

    if (strcmp(msg->env->type, MSG_START_DISPATCH) != 0)
        return CONSUMER_SKIP;
    if (payload_positive_id(msg->env->payload, "order_id", &order, order_id, sizeof(order_id))) {
        snprintf(err, errlen, "start_dispatch without a valid order_id");
        return CONSUMER_FAIL;
    }
    snprintf(steps, sizeof(steps), "%ld", cfg->steps);
    snprintf(interval, sizeof(interval), "%ld", cfg->interval_ms);
    const char *params[] = {order_id, msg->env->saga_id, steps, interval};
    /* One shipment per order, whatever the number of requests. */
    if (db_exec(conn, "shipment create",
                "INSERT INTO shipments (order_id, saga_id, steps, progress_remaining, status, "
                "next_step_at) VALUES ($1::bigint, $2, $3::int, $3::int, 'in_progress', "
                "now() + $4::int * interval '1 millisecond') ON CONFLICT (order_id) DO NOTHING",
                4, params) != 0) {
        snprintf(err, errlen, "database failure (SQLSTATE %s)", db_last_sqlstate());
        return consumer_db_failure(conn);
    }
    log_info("msg=\"shipment started\" order_id=%s saga_id=%s", order_id, msg->env->saga_id);
    return CONSUMER_OK;
}

static int emit(PGconn *conn, const char *saga_id, const char *type, const char *order_id,
                int progress)
{
    cJSON *payload = cJSON_CreateObject();

    cJSON_AddNumberToObject(payload, "order_id", atof(order_id));
    if (progress >= 0)
        cJSON_AddNumberToObject(payload, "progress_remaining", progress);
    return payload_emit(conn, TOPIC_DISPATCH_EVENTS, saga_id, type, SERVICE, NULL, saga_id,
                        payload);
}

int shipments_tick(PGconn *conn, void *arg)
{
    const struct shipments_config *cfg = arg;
    char interval[32];
    const char *params[] = {interval};
    PGresult *res;
    int rows;

    snprintf(interval, sizeof(interval), "%ld", cfg->interval_ms);
    if (db_begin(conn) != 0)
        return -1;
    /* SKIP LOCKED lets several replicas share the due shipments. */
    res = db_query(conn, "shipment step",
                   "WITH due AS (SELECT order_id FROM shipments WHERE status = 'in_progress' "
                   "AND next_step_at <= now() ORDER BY next_step_at LIMIT " TICK_BATCH " "
                   "FOR UPDATE SKIP LOCKED) "
                   "UPDATE shipments s SET progress_remaining = s.progress_remaining - 1, "
                   "status = CASE WHEN s.progress_remaining = 1 THEN 'dispatched' "
                   "ELSE 'in_progress' END, "
                   "dispatched_at = CASE WHEN s.progress_remaining = 1 THEN now() END, "
                   "next_step_at = now() + $1::int * interval '1 millisecond', "
                   "updated_at = now() FROM due WHERE s.order_id = due.order_id "
                   "RETURNING s.order_id, s.saga_id, s.progress_remaining",
                   1, params);
    if (res == NULL)
        goto fail;
    rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        const char *order_id = PQgetvalue(res, i, 0);
        const char *saga_id = PQgetvalue(res, i, 1);
        int progress = atoi(PQgetvalue(res, i, 2));

        if (emit(conn, saga_id, MSG_DISPATCH_PROGRESS, order_id, progress) != 0 ||
            (progress == 0 && emit(conn, saga_id, MSG_DISPATCH_COMPLETED, order_id, -1) != 0)) {
            PQclear(res);
            goto fail;
        }
        if (progress == 0)
            log_debug("msg=\"order dispatched\" order_id=%s saga_id=%s", order_id, saga_id);
    }
    PQclear(res);
    if (rows > 0)
        crashpoint("dispatch.step_before_commit");
    if (db_commit(conn) != 0)
        return -1;
    return rows;
fail:
    db_rollback(conn);
    return -1;
}
