/*
 * dead_letters.h - the operator's side of the dead-letter topics: list the
 * messages a service's consumer group gave up on, and hand one back to the
 * service once the cause is fixed ("redrive").
 *
 *   SERVICE dead-letters [--json]      list them, with whether each is still dead
 *   SERVICE dead-letters redrive ID    hand message ID back to the service
 *
 * Run with the service's own environment (database URL, brokers, topic
 * prefix, group). A redrive reads the original message from its topic and
 * produces a copy (same key, value and headers, plus "redriven_from") to the
 * same partition; the running service then handles it like any other, the
 * copy's inbox row taking the place of the "dead_letter" one (consumer.c).
 * The redrive changes nothing itself, so one interrupted at any point is
 * finished by running it again, and one run twice is harmless: the inbox
 * skips the second copy.
 */
#ifndef SHARED_DEAD_LETTERS_H
#define SHARED_DEAD_LETTERS_H

#include "service.h"

/* Checks the command's arguments (argv[0] is "dead-letters") before anything
 * is configured: 1 when they are well formed, else 0 after printing the
 * usage to stderr. */
int dead_letters_usage_ok(const char *name, int argc, char **argv);

/* Runs the command in argv (argv[0] is "dead-letters"); returns the process's
 * exit status: 0 done, 1 failed (reason on stderr), 2 bad usage. */
int dead_letters_command(const struct service_spec *spec, const struct service_settings *settings,
                         int argc, char **argv);

#endif
