/*
 * crashpoint.c - SIGKILL, or an injected failure, at a named point, for crash tests.
 */
#define _POSIX_C_SOURCE 200809L
#include "crashpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* One armed point: its name, the hit that fires, the hits so far. */
struct armed_point {
    char name[96];
    long after;
    atomic_long hits;
};

static struct armed_point crash_at, fault_at;

/* Reads "<point>[:<n>]" from the environment variable var into armed. */
static void arm(struct armed_point *armed, const char *var)
{
    const char *spec = getenv(var);
    const char *colon;

    armed->name[0] = '\0';
    if (spec == NULL || spec[0] == '\0')
        return;
    colon = strchr(spec, ':');
    snprintf(armed->name, sizeof(armed->name), "%.*s",
             (int)(colon ? (size_t)(colon - spec) : strlen(spec)), spec);
    armed->after = colon ? atol(colon + 1) : 1;
    if (armed->after < 1)
        armed->after = 1;
    log_warn("msg=\"fault injection armed\" var=%s point=%s hit=%ld", var, armed->name,
             armed->after);
}

/* Counts a hit of point; returns 1 when it is the armed one's n-th. */
static int reached(struct armed_point *armed, const char *point)
{
    if (armed->name[0] == '\0' || strcmp(point, armed->name) != 0)
        return 0;
    return atomic_fetch_add(&armed->hits, 1) + 1 == armed->after;
}

void crashpoint_init(void)
{
    arm(&crash_at, "CRASH_AT");
    arm(&fault_at, "FAULT_AT");
}

int faultpoint(const char *point)
{
    if (!reached(&fault_at, point))
        return 0;
    log_warn("msg=\"fault point reached\" point=%s", point);
    return 1;
}

void crashpoint(const char *point)
{
    if (!reached(&crash_at, point))
        return;
    log_error("msg=\"crash point reached; killing the process\" point=%s", point);
    kill(getpid(), SIGKILL);
    _exit(137); /* not reached */
}
