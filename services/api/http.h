/*
 * http.h - the api's public HTTP server (port 8080 by default): the web page,
 * the DBOS widget-store REST API, /healthz, /readyz, /metrics and the crash
 * button. Bodies are not used by any endpoint and are refused above a small
 * limit; wrong methods get 405, unknown paths 404.
 */
#ifndef API_HTTP_H
#define API_HTTP_H

#include <stddef.h>

#include "service.h"
#include "store.h"

#define HTTP_MAX_BODY 4096

struct http_server; /* opaque */

/*
 * Starts the server on port with one thread per connection (the checkout and
 * webhook calls block while they wait). page is served at "/" and must
 * outlive the server. Returns NULL with a reason in err.
 */
struct http_server *http_start(int port, struct store *store, struct service *svc, const char *page,
                               size_t page_len, char *err, size_t errlen);

/* Stops the server and frees it. Accepts NULL. */
void http_stop(struct http_server *server);

#endif
