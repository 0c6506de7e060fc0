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

/* The pool hands back what was released, keeps at most BUFFER_POOL_MAX blocks of
 * one capacity, frees the rest, and a pooled buffer starts empty. */
static void test_pool_reuse(void **state)
{
    (void)state;
    struct buffer_pool pool = {0};
    struct buffer b = {0};
    assert_int_equal(buffer_alloc_from(&pool, &b, 64), 0);
    buffer_put(&b, "xyz", 3);
    char *block = b.data;
    buffer_release_to(&pool, &b);
    assert_null(b.data);
    assert_int_equal(pool.n, 1);
    assert_int_equal(buffer_alloc_from(&pool, &b, 64), 0);
    assert_ptr_equal(b.data, block);
    assert_int_equal(b.cap, 64);
    assert_int_equal(buffer_len(&b), 0);
    assert_int_equal(pool.n, 0);
    /* another capacity is not served from the pool, and is freed when it is not empty */
    struct buffer other = {0};
    buffer_release_to(&pool, &b);
    assert_int_equal(buffer_alloc_from(&pool, &other, 128), 0);
    assert_int_equal(pool.n, 1);
    buffer_release_to(&pool, &other);
    assert_int_equal(pool.n, 1);
    assert_null(other.data);
    /* bounded */
    struct buffer many[BUFFER_POOL_MAX + 2];
    for (size_t i = 0; i < BUFFER_POOL_MAX + 2; i++)
        assert_int_equal(buffer_alloc_from(&pool, &many[i], 64), 0);
    for (size_t i = 0; i < BUFFER_POOL_MAX + 2; i++)
        buffer_release_to(&pool, &many[i]);
    assert_int_equal(pool.n, BUFFER_POOL_MAX);
    buffer_release_to(&pool, &b); /* never allocated: no-op */
    buffer_pool_drain(&pool);
    assert_int_equal(pool.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_consume_compact),
        cmocka_unit_test(test_reset_only_when_empty),
        cmocka_unit_test(test_pool_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
