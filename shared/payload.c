/*
 * payload.c - payload field helpers and one-call message emission.
 */
#define _POSIX_C_SOURCE 200809L
#include "payload.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "outbox.h"

int payload_int(const cJSON *payload, const char *name, long long *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(payload, name);

    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
        fabs(item->valuedouble) > 9007199254740992.0)
        return -1;
    *out = (long long)item->valuedouble;
    return 0;
}

int payload_positive_id(const cJSON *payload, const char *name, long long *out, char *text,
                        size_t cap)
{
    if (payload_int(payload, name, out) != 0 || *out <= 0)
        return -1;
    snprintf(text, cap, "%lld", *out);
    return 0;
}

const char *payload_str(const cJSON *payload, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(payload, name);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}

int payload_optional_uuid(const cJSON *payload, const char *name, const char **out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(payload, name);

    *out = NULL;
    if (item == NULL)
        return 0;
    if (!cJSON_IsString(item) || !envelope_is_uuid(item->valuestring))
        return -1;
    *out = item->valuestring;
    return 0;
}

int payload_copy_text(char *out, size_t cap, const char *text)
{
    size_t len = strlen(text);

    if (len < cap) {
        memcpy(out, text, len + 1);
        return 0;
    }
    len = cap - 1;
    /* Back off over continuation bytes (10xxxxxx) to the lead byte of the
     * sequence the cut falls in, and leave that sequence out. */
    while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
        len--;
    memcpy(out, text, len);
    out[len] = '\0';
    return 1;
}

int payload_emit(PGconn *conn, const char *topic, const char *key, const char *type,
                 const char *producer, const struct consumer_message *cause, const char *saga_id,
                 cJSON *payload)
{
    struct envelope env;
    int rc;

    if (envelope_build(&env, type, saga_id ? saga_id : cause->env->saga_id, producer,
                       cause ? cause->env : NULL, payload) != 0)
        return -1;
    rc = outbox_enqueue(conn, topic, key, &env, cause ? cause->traceparent : NULL);
    envelope_free(&env);
    return rc;
}

int payload_amount_times(const char *unit_price, const char *quantity, char *out, size_t outlen)
{
    long long cents = 0, qty;
    int decimals = -1;
    char *end;

    for (const char *p = unit_price; *p; p++) {
        if (*p == '.' && decimals < 0 && p != unit_price) {
            decimals = 0;
            continue;
        }
        if (*p < '0' || *p > '9' || decimals == 2 || cents > 100000000000LL)
            return -1;
        cents = cents * 10 + (*p - '0');
        if (decimals >= 0)
            decimals++;
    }
    if (unit_price[0] == '\0' || decimals == 0)
        return -1;
    for (; decimals < 2; decimals = decimals < 0 ? 1 : decimals + 1)
        cents *= 10;
    qty = strtoll(quantity, &end, 10);
    /* cents * qty < 10^10 (numeric(10,2)), checked without multiplying:
     * the product of the largest price and quantity overflows 64 bits. */
    if (*end != '\0' || qty <= 0 || qty > 1000000 || cents > 9999999999LL / qty)
        return -1;
    snprintf(out, outlen, "%lld.%02lld", cents * qty / 100, cents * qty % 100);
    return 0;
}
