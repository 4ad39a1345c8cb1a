/*
 * ticker.h - a thread that runs a periodic job against the database, with its
 * own connection (reconnected with backoff when lost). Used for durable
 * timers: the job reads due rows and handles each in one transaction.
 */
#ifndef SHARED_TICKER_H
#define SHARED_TICKER_H

#include <libpq-fe.h>

/*
 * The job. Returns the number of items handled (the ticker runs it again at
 * once while it finds work), 0 when there was nothing to do (it sleeps
 * interval_ms), or -1 on failure (it backs off, reconnecting if needed).
 */
typedef int (*ticker_fn)(PGconn *conn, void *arg);

struct ticker; /* opaque */

/* Starts the thread. db_url and name must outlive the ticker. Returns NULL
 * if the thread cannot be created. */
struct ticker *ticker_start(const char *db_url, const char *name, long interval_ms, ticker_fn fn,
                            void *arg);

/* Stops the thread after the current run and frees it. Accepts NULL. */
void ticker_stop(struct ticker *ticker);

#endif
