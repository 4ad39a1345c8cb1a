/*
 * admin_http.h - the small operations HTTP server every service runs:
 *   GET /healthz  200 while the process is alive
 *   GET /readyz   200 when ready_fn says so, else 503
 *   GET /metrics  Prometheus text format (metrics.h)
 * Other paths can be served by an optional extra handler.
 */
#ifndef SHARED_ADMIN_HTTP_H
#define SHARED_ADMIN_HTTP_H

#include <stddef.h>

struct admin_http; /* opaque */

/* Returns non-zero when the service is ready; may write a reason into why. */
typedef int (*admin_ready_fn)(void *arg, char *why, size_t whylen);

/*
 * Extra routes: called for any path the server does not know. Fills *status,
 * *body (malloc'd; the server frees it) and *content_type (static string).
 * Returns 0 if it handled the request, -1 to answer 404.
 */
typedef int (*admin_route_fn)(void *arg, const char *method, const char *path, int *status,
                              char **body, const char **content_type);

/*
 * Starts the server on address:port, with a thread of its own for each
 * connection (so ready_fn and route_fn may run in several at once, and a
 * route that waits holds back no other request); address is a numeric
 * IPv4 or IPv6 address ("127.0.0.1", "0.0.0.0", "::"). Returns NULL with a
 * reason in err if the address is not one or the port cannot be bound.
 */
struct admin_http *admin_http_start(const char *address, int port, admin_ready_fn ready_fn,
                                    void *ready_arg, admin_route_fn route_fn, void *route_arg,
                                    char *err, size_t errlen);

/* Stops the server and frees it. Accepts NULL. */
void admin_http_stop(struct admin_http *server);

#endif
