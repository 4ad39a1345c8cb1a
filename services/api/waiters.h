/*
 * waiters.h - lets HTTP threads sleep until the read model changes for their
 * key, instead of polling it. The api's projections send
 * NOTIFY read_model, key when they change a row; one
 * listener thread per process LISTENs and wakes the waiters registered for
 * that key. Because any replica's consumer may write the row, the signal goes
 * through PostgreSQL, not process memory. (The notification is sent just
 * after the projection's commit, see db_notify_after_commit.)
 *
 * A waiter always re-checks the row itself, so a lost notification (listener
 * reconnecting) only costs the fallback interval, never a wrong answer.
 */
#ifndef API_WAITERS_H
#define API_WAITERS_H

#include <pthread.h>

#define WAITERS_CHANNEL "read_model"
#define WAITER_KEY_MAX  128

struct waiters; /* opaque */

struct waiter {
    char key[WAITER_KEY_MAX];
    int signalled;
    pthread_cond_t cond;
    struct waiter *prev, *next;
};

/* Starts the listener thread on db_url. NULL on out-of-memory or thread
 * failure; an unreachable database is retried by the thread. */
struct waiters *waiters_start(const char *db_url);
void waiters_stop(struct waiters *waiters);

/* Registers w for key: call before the first check of the row. */
void waiter_register(struct waiters *waiters, struct waiter *w, const char *key);

/* Sleeps until a notification for w's key arrives or timeout_ms passes.
 * Returns at once if one arrived since the last call. */
void waiter_wait(struct waiters *waiters, struct waiter *w, long timeout_ms);

void waiter_unregister(struct waiters *waiters, struct waiter *w);

#endif
