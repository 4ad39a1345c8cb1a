/*
 * crashpoint.h - named fault-injection points. A test sets
 *
 *   CRASH_AT=<point>[:<n>]
 *
 * in a service's environment, and the process kills itself with SIGKILL the
 * n-th time (default: the first) execution reaches that point, exactly as an
 * external kill -9 at that instant would. Unset, a point costs one
 * comparison. Points used by the shared library:
 *
 *   relay.after_publish       broker acknowledged a batch, rows not yet deleted
 *   consumer.before_commit    handler done, transaction not yet committed
 *   consumer.after_commit     transaction committed, Kafka offset not yet stored
 *
 * and by the services:
 *
 *   inventory.after_reserve        stock taken, reply not yet written
 *   payment.after_capture          payment captured, event not yet written
 *   checkout.in_compensation       compensations written, transaction open
 *   checkout.timer_before_commit   a durable timer fired, not yet committed
 *   dispatch.step_before_commit    a dispatch step applied, not yet committed
 *
 * A fault point is the same, but instead of dying the process takes a failure
 * it would otherwise wait for by chance. A test sets
 *
 *   FAULT_AT=<point>[:<n>]
 *
 * and faultpoint() answers 1 the n-th time execution reaches that point:
 *
 *   relay.producer_fatal      the relay's producer raises a fatal error
 */
#ifndef SHARED_CRASHPOINT_H
#define SHARED_CRASHPOINT_H

/* Reads CRASH_AT and FAULT_AT once. Call at start-up, before any thread runs. */
void crashpoint_init(void);

/* Dies here if CRASH_AT names point and its count is reached. */
void crashpoint(const char *point);

/* Returns 1 if FAULT_AT names point and this is its n-th hit, else 0. */
int faultpoint(const char *point);

#endif
