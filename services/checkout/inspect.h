/*
 * inspect.h - saga inspection on checkout's admin port, and the operator's
 * one action on a saga:
 *   GET /sagas/<saga_id>         one saga: state, definition version, attempt
 *                                counts, compensations, step history, timers
 *   GET /sagas/state/<state>     up to 100 sagas in that state (for example
 *                                compensation_failed), newest first
 *   POST /sagas/<saga_id>/resume a saga parked as compensation_failed goes
 *                                back to compensating (saga_resume); 200 and
 *                                the saga, 404 unknown, 409 not parked
 * and, on /metrics, the number of unfinished sagas by state.
 */
#ifndef CHECKOUT_INSPECT_H
#define CHECKOUT_INSPECT_H

#include "db_pool.h"
#include "saga.h"

/* How long a lookup or resume may wait (on a lock, say) before the server
 * cancels it and the caller is told to try again. */
#define INSPECT_STATEMENT_TIMEOUT_MS 5000

struct inspect_context {
    struct db_pool *pool;
    const struct saga_config *saga;
};

/* admin_route_fn; arg is a struct inspect_context. */
int inspect_route(void *arg, const char *method, const char *path, int *status, char **body,
                  const char **content_type);

/* Registers the gauge sagas{state="..."}: how many sagas are in each state
 * short of completed or cancelled (compensation_failed: parked for an
 * operator). Call once at start-up. */
void inspect_metrics_init(void);

/* ticker_fn refreshing those gauges from the database (one indexed count);
 * returns 0, or -1 when the query fails. */
int inspect_count_sagas(PGconn *conn, void *arg);

#endif
