/*
 * crashpoint.c - SIGKILL at a named point, for crash tests.
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

static char crash_point[96];
static long crash_after = 1;
static atomic_long crash_hits;

void crashpoint_init(void)
{
    const char *spec = getenv("CRASH_AT");
    const char *colon;

    crash_point[0] = '\0';
    if (spec == NULL || spec[0] == '\0')
        return;
    colon = strchr(spec, ':');
    snprintf(crash_point, sizeof(crash_point), "%.*s",
             (int)(colon ? (size_t)(colon - spec) : strlen(spec)), spec);
    crash_after = colon ? atol(colon + 1) : 1;
    if (crash_after < 1)
        crash_after = 1;
    log_warn("msg=\"fault injection armed\" crash_at=%s hit=%ld", crash_point, crash_after);
}

void crashpoint(const char *point)
{
    if (crash_point[0] == '\0' || strcmp(point, crash_point) != 0)
        return;
    if (atomic_fetch_add(&crash_hits, 1) + 1 != crash_after)
        return;
    log_error("msg=\"crash point reached; killing the process\" point=%s", point);
    kill(getpid(), SIGKILL);
    _exit(137); /* not reached */
}
