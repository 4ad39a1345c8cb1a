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
 * Starts the server on port with a pool of threads polling the connections
 * (a call waiting for its answer suspends its connection and holds none;
 * the database statements themselves run on these threads). page is served
 * at "/" and must outlive the server. Returns NULL with a reason in err.
 */
struct http_server *http_start(int port, int threads, struct store *store, struct service *svc,
                               const char *page, size_t page_len, char *err, size_t errlen);

/* Resumes every waiting call (each answers 504: retry), then stops the server
 * and frees it. Accepts NULL. */
void http_stop(struct http_server *server);

#endif
