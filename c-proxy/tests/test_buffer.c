/* Unit tests: buffer.h (fixed-size buffer with cursors). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "buffer.h"

static void test_put_consume_compact(void **state)
{
    (void)state;
    struct buffer b = {0};
    assert_int_equal(buffer_alloc(&b, 8), 0);
    assert_int_equal(buffer_space(&b), 8);
    buffer_put(&b, "abcdef", 6);
    assert_int_equal(buffer_len(&b), 6);
    assert_int_equal(buffer_space(&b), 2);
    buffer_consume(&b, 4);
    assert_int_equal(buffer_len(&b), 2);
    assert_memory_equal(buffer_head(&b), "ef", 2);
    /* consumed bytes stay in place until compaction (parsers may point at them) */
    assert_int_equal(buffer_space(&b), 2);
    buffer_compact(&b);
    assert_int_equal(b.rpos, 0);
    assert_int_equal(buffer_space(&b), 6);
    assert_memory_equal(buffer_head(&b), "ef", 2);
    assert_int_equal(buffer_put_some(&b, "0123456789", 10), 6);
    assert_int_equal(buffer_len(&b), 8);
    assert_int_equal(buffer_space(&b), 0);
    buffer_consume(&b, 8);
    buffer_reset_if_empty(&b);
    assert_int_equal(b.wpos, 0);
    assert_int_equal(buffer_space(&b), 8);
    buffer_release(&b);
    assert_null(b.data);
    buffer_release(&b); /* twice is fine */
}

static void test_reset_only_when_empty(void **state)
{
    (void)state;
    struct buffer b = {0};
    assert_int_equal(buffer_alloc(&b, 4), 0);
    buffer_puts(&b, "ab");
    buffer_consume(&b, 1);
    buffer_reset_if_empty(&b);
    assert_int_equal(b.rpos, 1);
    assert_int_equal(b.wpos, 2);
    buffer_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_consume_compact),
        cmocka_unit_test(test_reset_only_when_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
