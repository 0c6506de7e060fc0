/* store_dump FILE: print a store's content through the C store, one line per
 * row, for the twin-compatibility tests. Twin: `python -m pyproxy.store dump
 * FILE` prints the same bytes. Format (docs/store.md):
 *   schema_version N
 *   client ID CAPACITY RATE_PER_SEC UPDATED_AT
 *   bucket ID TOKENS AT
 * IDs have bytes outside "!".."~" and "%" written as %XX; numbers are %.17g
 * (exact round trip). Exit 0, or 2 with the store's error on stderr. */
#include <stdio.h>

#include "store.h"

static void put_id(const char *id)
{
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
        if (*p <= ' ' || *p > '~' || *p == '%')
            printf("%%%02X", *p);
        else
            putchar(*p);
    }
}

int main(int argc, char **argv)
{
    char err[STORE_ERR_MAX];
    struct store_data d;

    if (argc != 2) {
        fprintf(stderr, "usage: store_dump FILE\n");
        return 2;
    }
    struct store *s = store_open(argv[1], STORE_F_READONLY, err, sizeof err);
    if (s == NULL || store_load(s, &d, err, sizeof err) == -1) {
        fprintf(stderr, "%s\n", err);
        store_close(s);
        return 2;
    }
    printf("schema_version %d\n", d.version);
    for (size_t i = 0; i < d.n_clients; i++) {
        printf("client ");
        put_id(d.clients[i].client_id);
        printf(" %lld %.17g %.17g\n", (long long)d.clients[i].capacity, d.clients[i].rate_per_sec,
               d.clients[i].updated_at);
    }
    for (size_t i = 0; i < d.n_buckets; i++) {
        printf("bucket ");
        put_id(d.buckets[i].client_id);
        printf(" %.17g %.17g\n", d.buckets[i].tokens, d.buckets[i].at);
    }
    store_data_free(&d);
    store_close(s);
    return 0;
}
