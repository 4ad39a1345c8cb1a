/*
 * backoff.h - exponential backoff with jitter for retrying transient failures,
 * and the sleeps and deadlines that go with it.
 *
 * The delay before attempt n (n = 1 for the first retry) is drawn uniformly
 * from [cap_n / 2, cap_n], where cap_n = min(max_ms, base_ms * 2^(n-1)).
 * Half the delay is fixed so retries never hammer a recovering peer, and half
 * is random so many clients do not retry in lockstep.
 */
#ifndef SHARED_BACKOFF_H
#define SHARED_BACKOFF_H

#include <stdint.h>
#include <time.h>

/* Cap for retrying a lost database or broker: an attempt a second is no load,
 * and a peer back from an outage is noticed within a second (BENCHMARKS.md,
 * "Recovery"). */
#define BACKOFF_RECONNECT_MAX_MS 1000

struct backoff {
    long base_ms;
    long max_ms;
    unsigned attempt; /* retries so far */
    uint64_t rng;     /* xorshift state; never zero */
};

/* Initialises b. seed 0 picks one from the clock and the process id. */
void backoff_init(struct backoff *b, long base_ms, long max_ms, uint64_t seed);

/* Returns the delay in milliseconds before the next retry and counts it. */
long backoff_next(struct backoff *b);

/* Forgets earlier failures after a success. */
void backoff_reset(struct backoff *b);

/* The upper bound of the delay for retry number attempt (1-based), without
 * jitter. Pure; exposed for tests. */
long backoff_cap(long base_ms, long max_ms, unsigned attempt);

/* Sleeps for ms milliseconds (restarting after signals). */
void backoff_sleep_ms(long ms);

/* Milliseconds on the monotonic clock, for measuring durations. */
double backoff_now_ms(void);

/* The time ms milliseconds from now on clock, for pthread_cond_timedwait. */
struct timespec backoff_deadline(clockid_t clock, long ms);

#endif
