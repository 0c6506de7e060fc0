/* Unit tests of retry.c. Twin: py-proxy/tests/test_retry.py (same names, same cases). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "retry.h"

/* A budget that never says no: the method/phase rules alone decide. */
static const struct retry_budget ample = {.percent = 20, .min_concurrent = 3};

static struct retry_attempt attempt(enum retry_phase phase, const char *method)
{
    return (struct retry_attempt){.phase = phase,
                                  .idempotent = retry_idempotent(method, false),
                                  .replayable = true,
                                  .attempts = 1,
                                  .max_attempts = 3};
}

static void test_connect_retried_for_every_method(void **state)
{
    static const char *const methods[] = {"GET", "POST", "PATCH", "PUT", "CONNECT", "FOO"};

    (void)state;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        struct retry_attempt a = attempt(RETRY_PHASE_CONNECT, methods[i]);
        assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
        a.replayable = false; /* nothing was sent: replay does not matter */
        assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
    }
}

static void test_send_and_head_retried_when_idempotent(void **state)
{
    static const char *const methods[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};

    (void)state;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        struct retry_attempt a = attempt(RETRY_PHASE_SEND, methods[i]);
        assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
        a.phase = RETRY_PHASE_HEAD;
        assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
    }
}

static void test_send_and_head_post_not_retried(void **state)
{
    static const char *const methods[] = {"POST", "PATCH", "CONNECT"};

    (void)state;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        struct retry_attempt a = attempt(RETRY_PHASE_SEND, methods[i]);
        assert_int_equal(retry_decide(&a, &ample), RETRY_NO_UNSAFE);
        a.phase = RETRY_PHASE_HEAD;
        assert_int_equal(retry_decide(&a, &ample), RETRY_NO_UNSAFE);
    }
}

static void test_idempotency_key_makes_post_retryable(void **state)
{
    struct retry_attempt a = attempt(RETRY_PHASE_HEAD, "POST");

    (void)state;
    a.idempotent = retry_idempotent("POST", true);
    assert_true(a.idempotent);
    assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
    a.phase = RETRY_PHASE_SEND;
    assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
    assert_true(retry_idempotent("PATCH", true));
}

static void test_never_after_response_started(void **state)
{
    static const enum retry_phase phases[] = {RETRY_PHASE_CONNECT, RETRY_PHASE_SEND,
                                              RETRY_PHASE_HEAD};

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        struct retry_attempt a = attempt(phases[i], "GET");
        a.response_started = true;
        assert_int_equal(retry_decide(&a, &ample), RETRY_NO_RESPONSE);
    }
}

static void test_not_replayable_not_retried_after_send(void **state)
{
    struct retry_attempt a = attempt(RETRY_PHASE_SEND, "PUT");

    (void)state;
    a.replayable = false;
    assert_int_equal(retry_decide(&a, &ample), RETRY_NO_REPLAY);
    a.phase = RETRY_PHASE_HEAD;
    assert_int_equal(retry_decide(&a, &ample), RETRY_NO_REPLAY);
    a.phase = RETRY_PHASE_CONNECT;
    assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
    /* an unsafe method is refused for being unsafe first */
    a = attempt(RETRY_PHASE_HEAD, "POST");
    a.replayable = false;
    assert_int_equal(retry_decide(&a, &ample), RETRY_NO_UNSAFE);
}

static void test_attempts_exhausted(void **state)
{
    struct retry_attempt a = attempt(RETRY_PHASE_CONNECT, "GET");

    (void)state;
    a.attempts = 2;
    assert_int_equal(retry_decide(&a, &ample), RETRY_GO);
    a.attempts = 3;
    assert_int_equal(retry_decide(&a, &ample), RETRY_NO_ATTEMPTS);
    a.max_attempts = 1; /* retries: 0 */
    a.attempts = 1;
    assert_int_equal(retry_decide(&a, &ample), RETRY_NO_ATTEMPTS);
}

static void test_budget_min_concurrent(void **state)
{
    struct retry_attempt a = attempt(RETRY_PHASE_CONNECT, "GET");
    struct retry_budget b = {.percent = 20, .min_concurrent = 3, .requests_in_flight = 1};

    (void)state;
    /* 20% of 1 is 0: min_concurrent allows 3 retries in flight */
    for (b.retries_in_flight = 0; b.retries_in_flight < 3; b.retries_in_flight++)
        assert_int_equal(retry_decide(&a, &b), RETRY_GO);
    assert_int_equal(retry_decide(&a, &b), RETRY_NO_BUDGET);
}

static void test_budget_percent(void **state)
{
    struct retry_attempt a = attempt(RETRY_PHASE_HEAD, "GET");
    struct retry_budget b = {.percent = 20, .min_concurrent = 3, .requests_in_flight = 100};

    (void)state;
    b.retries_in_flight = 19; /* 20 allowed */
    assert_int_equal(retry_decide(&a, &b), RETRY_GO);
    b.retries_in_flight = 20;
    assert_int_equal(retry_decide(&a, &b), RETRY_NO_BUDGET);
    b.requests_in_flight = 104; /* floor(20.8) = 20 */
    assert_int_equal(retry_decide(&a, &b), RETRY_NO_BUDGET);
    b.requests_in_flight = 105; /* 21 */
    assert_int_equal(retry_decide(&a, &b), RETRY_GO);
    b.percent = 100;
    b.requests_in_flight = 4294967295u; /* no overflow */
    b.retries_in_flight = 4294967294u;
    assert_int_equal(retry_decide(&a, &b), RETRY_GO);
}

static void test_budget_zero_disables_retries(void **state)
{
    struct retry_attempt a = attempt(RETRY_PHASE_CONNECT, "GET");
    struct retry_budget b = {.percent = 0, .min_concurrent = 0, .requests_in_flight = 1000};

    (void)state;
    assert_int_equal(retry_decide(&a, &b), RETRY_NO_BUDGET);
    assert_false(retry_budget_allows(&b));
}

static void test_phase_names(void **state)
{
    (void)state;
    assert_string_equal(retry_phase_name(RETRY_PHASE_CONNECT), "connect");
    assert_string_equal(retry_phase_name(RETRY_PHASE_SEND), "send");
    assert_string_equal(retry_phase_name(RETRY_PHASE_HEAD), "head");
    assert_int_equal(RETRY_PHASE_CONNECT, 0);
    assert_int_equal(RETRY_PHASE_HEAD, 2);
}

static void test_idempotent_methods(void **state)
{
    static const char *const yes[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};
    static const char *const no[] = {"POST", "PATCH", "CONNECT", "get", "PROPFIND", ""};

    (void)state;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_true(retry_idempotent(yes[i], false));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        assert_false(retry_idempotent(no[i], false));
        assert_true(retry_idempotent(no[i], true));
    }
}

static void test_verdict_names(void **state)
{
    (void)state;
    assert_string_equal(retry_verdict_name(RETRY_GO), "go");
    assert_string_equal(retry_verdict_name(RETRY_NO_UNSAFE), "unsafe_method");
    assert_string_equal(retry_verdict_name(RETRY_NO_REPLAY), "not_replayable");
    assert_string_equal(retry_verdict_name(RETRY_NO_RESPONSE), "response_started");
    assert_string_equal(retry_verdict_name(RETRY_NO_ATTEMPTS), "no_attempts_left");
    assert_string_equal(retry_verdict_name(RETRY_NO_BUDGET), "budget_exhausted");
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_retried_for_every_method),
        cmocka_unit_test(test_send_and_head_retried_when_idempotent),
        cmocka_unit_test(test_send_and_head_post_not_retried),
        cmocka_unit_test(test_idempotency_key_makes_post_retryable),
        cmocka_unit_test(test_never_after_response_started),
        cmocka_unit_test(test_not_replayable_not_retried_after_send),
        cmocka_unit_test(test_attempts_exhausted),
        cmocka_unit_test(test_budget_min_concurrent),
        cmocka_unit_test(test_budget_percent),
        cmocka_unit_test(test_budget_zero_disables_retries),
        cmocka_unit_test(test_phase_names),
        cmocka_unit_test(test_idempotent_methods),
        cmocka_unit_test(test_verdict_names),
    };
    return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
