/*
 * inspect.c - JSON views of sagas, built by PostgreSQL's JSON functions from
 * the saga tables, the resume of a parked saga, and the gauges of unfinished
 * sagas by state.
 */
#define _POSIX_C_SOURCE 200809L
#include "inspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "metrics.h"

#define RESUME_SUFFIX "/resume"

#define SAGA_JSON                                                                                  \
    "json_build_object('saga_id', s.saga_id, 'order_id', s.order_id, 'state', s.state, "           \
    "'definition_version', s.definition_version, 'order_status', o.order_status, "                 \
    "'payment_id', o.payment_id, 'reason', o.reason, "                                             \
    "'compensation', json_build_object('stock_released', s.stock_released, "                       \
    "'payment_voided', s.payment_voided, 'attempts', s.compensation_attempts), "                   \
    "'created_at', s.created_at, 'updated_at', s.updated_at"

/* Runs sql (one JSON value, or no row) with param on conn; fills status. */
static char *query_json(PGconn *conn, const char *sql, const char *param, int *status)
{
    const char *params[] = {param};
    PGresult *res = db_query(conn, "saga inspect", sql, 1, params);
    char *body;

    if (res == NULL && strcmp(db_last_sqlstate(), "57014") == 0) {
        *status = 503; /* cancelled after INSPECT_STATEMENT_TIMEOUT_MS */
        body = strdup("database busy (query timed out), try again\n");
    } else if (res == NULL) {
        *status = 500;
        body = strdup("query failed\n");
    } else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        *status = 404;
        body = strdup("no such saga\n");
    } else {
        *status = 200;
        body = strdup(PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return body;
}

static char *run_json(struct db_pool *pool, const char *sql, const char *param, int *status)
{
    PGconn *conn = db_pool_acquire(pool, 2000);
    char *body;

    if (conn == NULL) {
        *status = 503;
        return strdup("database unavailable\n");
    }
    body = query_json(conn, sql, param, status);
    db_pool_release(pool, conn);
    return body;
}

#define ONE_SAGA_SQL                                                                               \
    "SELECT " SAGA_JSON ", "                                                                       \
    "'steps', (SELECT coalesce(json_agg(json_build_object('event', t.event, "                      \
    "'from', t.state_from, 'to', t.state_to, 'attempt', t.attempt, "                               \
    "'message_id', t.message_id, 'detail', t.detail, 'at', t.at) "                                 \
    "ORDER BY t.step_id), '[]') FROM saga_steps t WHERE t.saga_id = s.saga_id), "                  \
    "'timers', (SELECT coalesce(json_agg(json_build_object('kind', m.kind, "                       \
    "'fire_at', m.fire_at)), '[]') FROM timers m WHERE m.saga_id = s.saga_id)) "                   \
    "FROM sagas s JOIN orders o USING (order_id) WHERE s.saga_id = $1"

/* Resumes the parked saga saga_id in a transaction of its own; fills status
 * and returns the body (on success, the saga as the resume left it). */
static char *resume(const struct inspect_context *ctx, const char *saga_id, int *status)
{
    PGconn *conn = db_pool_acquire(ctx->pool, 2000);
    char *body = NULL;
    int rc;

    if (conn == NULL) {
        *status = 503;
        return strdup("database unavailable\n");
    }
    rc = db_begin(conn) == 0 ? saga_resume(conn, saga_id, ctx->saga) : -1;
    if (rc == 1) {
        body = query_json(conn, ONE_SAGA_SQL, saga_id, status);
        if (*status != 200 || db_commit(conn) != 0)
            rc = -1;
    }
    if (rc != 1)
        db_rollback(conn);
    db_pool_release(ctx->pool, conn);
    if (rc == 1)
        return body;
    free(body);
    switch (rc) {
    case 0:
        *status = 409;
        return strdup("saga is not parked as compensation_failed; nothing to resume\n");
    case -2:
        *status = 404;
        return strdup("no such saga\n");
    default:
        *status = 503;
        return strdup("database failure; nothing changed, try again\n");
    }
}

int inspect_route(void *arg, const char *method, const char *path, int *status, char **body,
                  const char **content_type)
{
    const struct inspect_context *ctx = arg;
    struct db_pool *pool = ctx->pool;
    const char *rest;
    size_t len;
    int post = strcmp(method, "POST") == 0;

    if ((!post && strcmp(method, "GET") != 0) || strncmp(path, "/sagas/", 7) != 0)
        return -1;
    rest = path + 7;
    len = strlen(rest);
    if (len == 0 || len > 200) {
        *status = 400;
        *body = strdup("bad saga id\n");
        *content_type = "text/plain";
        return 0;
    }
    if (post) {
        char saga_id[201];
        size_t suffix = strlen(RESUME_SUFFIX);

        if (len <= suffix || strcmp(rest + len - suffix, RESUME_SUFFIX) != 0)
            return -1;
        snprintf(saga_id, sizeof(saga_id), "%.*s", (int)(len - suffix), rest);
        *body = resume(ctx, saga_id, status);
        *content_type = *status == 200 ? "application/json" : "text/plain";
        return 0;
    }
    *content_type = "application/json";
    if (strncmp(rest, "state/", 6) == 0) {
        *body = run_json(pool,
                         "SELECT coalesce(json_agg(x ORDER BY x_created DESC), '[]') FROM ("
                         "SELECT " SAGA_JSON ") AS x, s.created_at AS x_created "
                         "FROM sagas s JOIN orders o USING (order_id) WHERE s.state = $1 "
                         "ORDER BY s.created_at DESC LIMIT 100) q",
                         rest + 6, status);
        if (*status == 404) {
            *status = 200;
            free(*body);
            *body = strdup("[]");
        }
        return 0;
    }
    *body = run_json(pool, ONE_SAGA_SQL, rest, status);
    if (*status != 200)
        *content_type = "text/plain";
    return 0;
}

/* The states short of completed and cancelled, as the sagas_open index has
 * them (sql/checkout/001_sagas.sql, 003_expiring_payment.sql). */
static const char *const open_states[] = {
    "reserving",   "opening_payment", "awaiting_payment",   "expiring_payment",
    "dispatching", "compensating",    "compensation_failed"};
#define OPEN_STATES (sizeof(open_states) / sizeof(open_states[0]))
static struct metric *open_gauges[OPEN_STATES];

void inspect_metrics_init(void)
{
    char labels[64];

    for (size_t i = 0; i < OPEN_STATES; i++) {
        snprintf(labels, sizeof(labels), "state=\"%s\"", open_states[i]);
        open_gauges[i] = metrics_gauge("sagas", labels,
                                       "Sagas not yet completed or cancelled, by state "
                                       "(compensation_failed: parked for an operator)");
    }
}

int inspect_count_sagas(PGconn *conn, void *arg)
{
    long long counts[OPEN_STATES] = {0};
    PGresult *res;

    (void)arg;
    res = db_query(conn, "saga count",
                   "SELECT state, count(*) FROM sagas "
                   "WHERE state NOT IN ('completed', 'cancelled') GROUP BY state",
                   0, NULL);
    if (res == NULL)
        return -1;
    for (int row = 0; row < PQntuples(res); row++) {
        for (size_t i = 0; i < OPEN_STATES; i++) {
            if (strcmp(PQgetvalue(res, row, 0), open_states[i]) == 0)
                counts[i] = atoll(PQgetvalue(res, row, 1));
        }
    }
    PQclear(res);
    for (size_t i = 0; i < OPEN_STATES; i++)
        metrics_set(open_gauges[i], counts[i]);
    return 0;
}
