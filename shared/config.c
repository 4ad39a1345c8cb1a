/*
 * config.c - table-driven loading and validation of environment variables.
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int config_parse_bool(const char *text, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

int config_parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    long value;

    /* Digits with an optional minus, nothing else: strtol alone would take
     * leading blanks (a stray newline in a secret) and a plus. */
    if (text == NULL ||
        !(isdigit((unsigned char)text[0]) || (text[0] == '-' && isdigit((unsigned char)text[1]))))
        return -1;
    errno = 0;
    value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

static void append_error(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void append_error(char *errbuf, size_t errlen, const char *fmt, ...)
{
    size_t used = strlen(errbuf);
    va_list ap;

    if (used >= errlen - 1)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf + used, errlen - used, fmt, ap);
    va_end(ap);
}

static const char *env_lookup(const char *name, void *arg)
{
    (void)arg;
    return getenv(name);
}

int config_load_with(const struct config_entry *table, size_t count,
                     const char *(*lookup)(const char *name, void *arg), void *arg, char *errbuf,
                     size_t errlen)
{
    int bad = 0;

    if (errlen > 0)
        errbuf[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        const struct config_entry *entry = &table[i];
        const char *value = lookup(entry->name, arg);

        if (value == NULL || *value == '\0')
            value = entry->default_val;
        if (value == NULL) {
            append_error(errbuf, errlen, "%s: required but not set (%s)\n", entry->name,
                         entry->help ? entry->help : "");
            bad++;
            continue;
        }
        switch (entry->type) {
        case CONFIG_STRING:
            if (strlen(value) >= entry->size) {
                append_error(errbuf, errlen, "%s: longer than %zu bytes\n", entry->name,
                             entry->size - 1);
                bad++;
                break;
            }
            memcpy(entry->target, value, strlen(value) + 1);
            break;
        case CONFIG_INT:
            if (config_parse_long(value, entry->min, entry->max, (long *)entry->target) != 0) {
                append_error(errbuf, errlen, "%s: \"%.40s\" is not an integer in [%ld, %ld]\n",
                             entry->name, value, entry->min, entry->max);
                bad++;
            }
            break;
        case CONFIG_BOOL:
            if (config_parse_bool(value, (int *)entry->target) != 0) {
                append_error(errbuf, errlen, "%s: \"%.40s\" is not a boolean (true/false)\n",
                             entry->name, value);
                bad++;
            }
            break;
        }
    }
    return bad ? -1 : 0;
}

void config_print_help(FILE *out, const struct config_entry *table, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const struct config_entry *entry = &table[i];

        if (entry->default_val == NULL)
            fprintf(out, "  %s (required)\n", entry->name);
        else
            fprintf(out, "  %s (default \"%s\")\n", entry->name, entry->default_val);
        fprintf(out, "      %s\n", entry->help ? entry->help : "");
    }
}

int config_load(const struct config_entry *table, size_t count, char *errbuf, size_t errlen)
{
    return config_load_with(table, count, env_lookup, NULL, errbuf, errlen);
}
