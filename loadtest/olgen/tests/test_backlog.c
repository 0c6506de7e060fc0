/* backlog: FIFO order across growth and wrap-around; nothing is ever dropped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backlog.h"

static void test_fifo_order_with_wrap_and_growth(void **state)
{
    (void)state;
    struct backlog b;
    uint64_t v, next_in = 0, next_out = 0;
    backlog_init(&b);
    assert_int_equal(backlog_pop(&b, &v), -1);
    /* Interleave pushes and pops so the ring wraps before it grows, several times. */
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 1500 * (round + 1); i++)
            assert_int_equal(backlog_push(&b, next_in++), 0);
        for (int i = 0; i < 1000 * (round + 1); i++) {
            assert_int_equal(backlog_pop(&b, &v), 0);
            assert_int_equal(v, next_out++);
        }
    }
    assert_int_equal(b.len, next_in - next_out);
    assert_int_equal(backlog_peek(&b, &v), 0);
    assert_int_equal(v, next_out);
    while (backlog_pop(&b, &v) == 0)
        assert_int_equal(v, next_out++);
    assert_int_equal(next_out, next_in);
    backlog_deinit(&b);
    backlog_deinit(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_order_with_wrap_and_growth),
    };
    return cmocka_run_group_tests_name("backlog", tests, NULL, NULL);
}
