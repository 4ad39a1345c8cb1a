/*
 * waiters.h - lets HTTP threads sleep until the read model changes for their
 * key, instead of polling it. The api's projections send
 * NOTIFY read_model, key when they change a row; one
 * listener thread per process LISTENs and wakes the waiters registered for
 * that key. Because any replica's consumer may write the row, the signal goes
 * through PostgreSQL, not process memory. (The notification is sent just
 * after the projection's commit, see db_notify_after_commit.)
 *
 * A notification may carry the changed row's answer after the key and a
 * space ("order:KEY ANSWER"), so the woken thread need not read the row again.
 * Otherwise, or when several arrived at once, or on the fallback interval, a
 * waiter re-checks the row itself, so a lost notification (listener
 * reconnecting) only costs the fallback interval, never a wrong answer.
 */
#ifndef API_WAITERS_H
#define API_WAITERS_H

#include <pthread.h>
#include <stddef.h>

#define WAITERS_CHANNEL   "read_model"
#define WAITER_KEY_MAX    128
#define WAITER_ANSWER_MAX 256

struct waiters; /* opaque */

struct waiter {
    char key[WAITER_KEY_MAX];
    int notifications; /* since the last waiter_wait */
    int has_answer;    /* the only one carried answer */
    char answer[WAITER_ANSWER_MAX];
    pthread_cond_t cond;
    struct waiter *prev, *next;
};

/* Starts the listener thread on db_url. NULL on out-of-memory or thread
 * failure; an unreachable database is retried by the thread. */
struct waiters *waiters_start(const char *db_url);
void waiters_stop(struct waiters *waiters);

/* Registers w for key: call before the first check of the row. */
void waiter_register(struct waiters *waiters, struct waiter *w, const char *key);

/* Sleeps until a notification for w's key arrives or timeout_ms passes;
 * returns at once if one arrived since the last call. Returns 1 with the
 * answer copied into answer (of len bytes) when exactly one notification came
 * and it carried an answer; 0 when the caller must read the row instead. */
int waiter_wait(struct waiters *waiters, struct waiter *w, long timeout_ms, char *answer,
                size_t len);

void waiter_unregister(struct waiters *waiters, struct waiter *w);

#endif
