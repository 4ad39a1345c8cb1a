/*
 * config.h - configuration from environment variables, declared as a table.
 *
 * Each entry names one variable, its type, where to store it, its default and
 * its bounds. config_load() reads them all and reports every bad variable, not
 * just the first, so an operator fixes a broken deployment in one pass.
 */
#ifndef SHARED_CONFIG_H
#define SHARED_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum config_type { CONFIG_STRING, CONFIG_INT, CONFIG_BOOL };

struct config_entry {
    const char *name; /* environment variable, e.g. "KAFKA_BROKERS" */
    enum config_type type;
    void *target;            /* char[size] for strings, long * for ints, int * for bools */
    size_t size;             /* capacity of a CONFIG_STRING target, including the NUL */
    const char *default_val; /* NULL means the variable is required */
    long min, max;           /* inclusive bounds for CONFIG_INT */
    const char *help;
};

/*
 * Reads every entry of table from the environment (getenv). Values are
 * validated: integers must parse fully and lie in [min, max], booleans are
 * true/false/1/0/yes/no/on/off, strings must fit their target and required
 * ones must be non-empty. On failure, errbuf lists every bad variable, one per
 * line, and -1 is returned; on success 0. Targets of bad entries are left
 * unspecified.
 */
int config_load(const struct config_entry *table, size_t count, char *errbuf, size_t errlen);

/* Same, reading values through lookup(name, arg) instead of getenv; lookup
 * returns NULL for an unset variable. Used by the unit tests. */
int config_load_with(const struct config_entry *table, size_t count,
                     const char *(*lookup)(const char *name, void *arg), void *arg, char *errbuf,
                     size_t errlen);

/* Writes every entry of table to out: its name, its default (or
 * "required") and its help, for a program's --help. */
void config_print_help(FILE *out, const struct config_entry *table, size_t count);

/* Parses a boolean word as described above. Returns 0 and sets *out, or -1. */
int config_parse_bool(const char *text, int *out);

/* Parses a whole decimal integer in [min, max]. Returns 0 and sets *out, or -1. */
int config_parse_long(const char *text, long min, long max, long *out);

#endif
