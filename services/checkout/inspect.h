/*
 * inspect.h - saga inspection on checkout's admin port:
 *   GET /sagas/<saga_id>        one saga: state, definition version, attempt
 *                               counts, compensations, step history, timers
 *   GET /sagas/state/<state>    up to 100 sagas in that state (for example
 *                               compensation_failed), newest first
 */
#ifndef CHECKOUT_INSPECT_H
#define CHECKOUT_INSPECT_H

#include "db_pool.h"

/* admin_route_fn; arg is a struct db_pool. */
int inspect_route(void *arg, const char *method, const char *path, int *status, char **body,
                  const char **content_type);

#endif
