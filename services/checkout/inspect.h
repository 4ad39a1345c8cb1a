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
 */
#ifndef CHECKOUT_INSPECT_H
#define CHECKOUT_INSPECT_H

#include "db_pool.h"
#include "saga.h"

struct inspect_context {
    struct db_pool *pool;
    const struct saga_config *saga;
};

/* admin_route_fn; arg is a struct inspect_context. */
int inspect_route(void *arg, const char *method, const char *path, int *status, char **body,
                  const char **content_type);

#endif
