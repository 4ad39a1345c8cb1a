/*
 * waiters.h - lets HTTP requests wait, without holding a thread, until the
 * read model changes for their key. The api's projections send
 * NOTIFY read_model, key when they write an order or a restock ack (also
 * when a duplicate changed nothing); one listener thread per
 * process LISTENs and resumes the waiters parked on that key. Because any
 * replica's consumer may write the row, the signal goes through PostgreSQL,
 * not process memory. (The notification is sent just after the projection's
 * commit, see db_notify_after_commit.)
 *
 * A notification may carry the changed row's answer after the key and a
 * space ("order:KEY ANSWER"), so the resumed request need not read the row
 * again. Otherwise, or when several arrived at once, or when the park's
 * timeout ends it, the request re-checks the row itself, so a lost
 * notification (listener reconnecting) only costs the timeout, never a wrong
 * answer. Timeouts are kept by the listener thread, also while the database
 * is down.
 */
#ifndef API_WAITERS_H
#define API_WAITERS_H

#include <stddef.h>

#define WAITERS_CHANNEL   "read_model"
#define WAITER_KEY_MAX    128
#define WAITER_ANSWER_MAX 256

struct waiters; /* opaque */

/* One waiting request. The fields are the module's; callers only embed it. */
struct waiter {
    char key[WAITER_KEY_MAX];
    int notifications; /* since the last waiter_take */
    int has_answer;    /* the only one carried answer */
    char answer[WAITER_ANSWER_MAX];
    int parked;          /* resume() not yet called */
    double resume_at_ms; /* monotonic: resume then even without a notification */
    void (*resume)(void *arg);
    void *arg;
    struct waiter *prev, *next;
};

/* Starts the listener thread on db_url. NULL on out-of-memory or thread
 * failure; an unreachable database is retried by the thread. */
struct waiters *waiters_start(const char *db_url);

/* Resumes every parked waiter and refuses later parks (waiter_park returns
 * -1), so the HTTP server can stop with no request suspended. */
void waiters_close(struct waiters *waiters);

/* Stops the listener and frees waiters; every waiter must be unregistered. */
void waiters_stop(struct waiters *waiters);

/* Registers w for key: call before the first check of the row, so no change
 * after that check can go unnoticed. */
void waiter_register(struct waiters *waiters, struct waiter *w, const char *key);

/*
 * Parks w until a notification for its key arrives or timeout_ms passes,
 * then calls resume(arg) once, from the listener thread, with the waiters'
 * lock held (so resume must not call back into this module). suspend(arg) is
 * called under the same lock before this returns, so resume can never come
 * before it. Returns 1 when parked; 0 when not, because a notification came
 * since the last waiter_take (take it now); -1 when not, because the waiters
 * are closing. When 0 or -1, neither callback is called.
 */
int waiter_park(struct waiters *waiters, struct waiter *w, long timeout_ms,
                void (*suspend)(void *arg), void (*resume)(void *arg), void *arg);

/* Takes the notifications that came since the last call. Returns 1 with the
 * answer copied into answer (of len bytes) when exactly one came and it
 * carried an answer; 0 when the caller must read the row instead. */
int waiter_take(struct waiters *waiters, struct waiter *w, char *answer, size_t len);

/* Removes w; a parked w is never resumed after this. */
void waiter_unregister(struct waiters *waiters, struct waiter *w);

#endif
