/*
 * saga.h - the checkout saga: create the order, reserve stock, open a
 * payment, wait for the provider under a durable timeout, then either mark the
 * order paid and dispatch it, or release the stock, void the payment and
 * cancel it. Every transition is one local transaction that also records the
 * step and writes the next commands to the outbox.
 *
 *   reserving -> opening_payment -> awaiting_payment -> dispatching -> completed
 *        |                             |        |             ^
 *        |                   (timed out)        |             | (paid first)
 *        |                             v        |             |
 *        |                      expiring_payment ------------+
 *        |                             |        |
 *        v (out of stock, v1) (voided) v        v (failed)
 *    cancelled <------------------- compensating --(retries exhausted)-->
 *                                        ^             compensation_failed
 *        reserving, opening_payment -----+ (step timeout)
 *
 * A saga that waits longer than the step timeout for inventory (reserving)
 * or payment (opening_payment), say because the command was dead-lettered,
 * goes to compensating, so no order stays pending for ever. The timeout
 * counts from checkout's own start at the earliest, giving its consumer that
 * long to read the answers that piled up while it was down.
 *
 * A payment timeout does not cancel the order by itself: it asks payment to
 * cancel the payment unless it is paid, and payment, which sees the
 * provider's result and the cancel in one order, decides the race. A success
 * that was already on its way when checkout or payment was down is kept.
 *
 * Definition version 1 asks for the payment once the stock is reserved.
 * Version 2, used when the unit price is already known, asks for both at
 * once: the payment's id is kept on the saga until the stock is reserved (only
 * then is it offered on the order), a reservation at another price cancels
 * the order, and out of stock voids the payment asked for (through
 * compensating; version 1 goes straight to cancelled). A saga keeps the
 * version it started with.
 */
#ifndef CHECKOUT_SAGA_H
#define CHECKOUT_SAGA_H

#include "consumer.h"

#define SAGA_RESERVE_THEN_OPEN 1 /* definition versions, see above */
#define SAGA_RESERVE_AND_OPEN  2

/* A saga whose timer or step timeout just failed is passed over for this
 * long, so that one failing every time (a bug, a bad deploy) holds back no
 * other; up to SAGA_PASSED_OVER_MAX of them at once. */
#define SAGA_PASSED_OVER_MS  1000
#define SAGA_PASSED_OVER_MAX 16

struct saga_passed_over {
    char saga_id[ENVELOPE_KEY_MAX];
    double until_ms; /* backoff_now_ms() from which it is tried again */
};

struct saga_config {
    long payment_timeout_ms;      /* PAYMENT_TIMEOUT_MS */
    long compensation_retry_ms;   /* first resend of a compensation (COMPENSATION_RETRY_MS) */
    long max_compensation_rounds; /* rounds before compensation_failed (COMPENSATION_MAX_ROUNDS) */
    int open_payment_early;       /* version 2 when the price is known (OPEN_PAYMENT_EARLY) */
    long step_timeout_ms;      /* longest wait in reserving or opening_payment (STEP_TIMEOUT_MS) */
    double started_ms;         /* backoff_now_ms() at start: step timeouts wait this long too */
    double next_step_sweep_ms; /* the timer ticker's own: when to look for overdue steps */
    struct saga_passed_over passed_over[SAGA_PASSED_OVER_MAX]; /* the timer ticker's own */
};

/* Between looks for overdue steps while none is found, or giving up on one
 * fails. */
#define STEP_SWEEP_INTERVAL_MS 100

/* The message types saga_handle acts on; the consumer acknowledges others
 * without a transaction. */
extern const char *const saga_handled_types[];

/* consumer_handler_fn for checkout.commands and the events of inventory,
 * payment and dispatch; arg is a struct saga_config. */
int saga_handle(PGconn *conn, const struct consumer_message *msg, void *arg, char *err,
                size_t errlen);

/* ticker_fn firing due durable timers and step timeouts, one per
 * transaction, taking turns, and passing over sagas whose turn just failed;
 * arg as above (the ticker's thread alone writes next_step_sweep_ms and
 * passed_over). Returns 1 when it fired any, 0 when none was due, or -1. */
int saga_fire_timers(PGconn *conn, void *arg);

/* An operator's resume of a saga parked as compensation_failed, in the open
 * transaction on conn: back to compensating with its rounds counted afresh,
 * and the compensations still unconfirmed sent again. Returns 1 when resumed,
 * 0 when the saga is not parked, -2 when there is no such saga, -1 on
 * failure. */
int saga_resume(PGconn *conn, const char *saga_id, const struct saga_config *cfg);

#endif
