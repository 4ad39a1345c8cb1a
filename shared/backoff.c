/*
 * backoff.c - capped exponential backoff with "equal jitter".
 */
#define _POSIX_C_SOURCE 200809L
#include "backoff.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

void backoff_init(struct backoff *b, long base_ms, long max_ms, uint64_t seed)
{
    if (seed == 0) {
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        seed = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ ((uint64_t)getpid() << 40);
        if (seed == 0)
            seed = 0x9E3779B97F4A7C15ull;
    }
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->max_ms = max_ms >= b->base_ms ? max_ms : b->base_ms;
    b->attempt = 0;
    b->rng = seed;
}

long backoff_cap(long base_ms, long max_ms, unsigned attempt)
{
    long cap = base_ms;

    for (unsigned i = 1; i < attempt && cap < max_ms; i++)
        cap = cap > max_ms / 2 ? max_ms : cap * 2; /* never past max_ms, nor overflowing */
    return cap < max_ms ? cap : max_ms;
}

long backoff_next(struct backoff *b)
{
    long cap;
    long half;

    b->attempt++;
    cap = backoff_cap(b->base_ms, b->max_ms, b->attempt);
    half = cap / 2;
    return half + (long)(xorshift64(&b->rng) % (uint64_t)(cap - half + 1));
}

void backoff_reset(struct backoff *b)
{
    b->attempt = 0;
}

void backoff_sleep_ms(long ms)
{
    struct timespec req = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&req, &req) != 0 && errno == EINTR)
        ;
}

struct timespec backoff_deadline(clockid_t clock, long ms)
{
    struct timespec at;

    if (ms < 0) /* already past: now, with tv_nsec in range */
        ms = 0;
    clock_gettime(clock, &at);
    at.tv_sec += ms / 1000;
    at.tv_nsec += (ms % 1000) * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000L;
    }
    return at;
}

double backoff_now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
}
