/* Connection caps: total, descriptors, per address, per IPv6 prefix; the
 * tickets' release; threads acquiring and releasing at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "common/config.h"
#include "proxy/conncap.h"

static struct conncap *make(size_t total, size_t fds, size_t per_ip, size_t per_prefix,
                            unsigned prefix_len)
{
    struct conncap_limits lim = {
        .max_total = total,
        .max_descriptors = fds,
        .max_per_ip = per_ip,
        .max_per_prefix = per_prefix,
        .ipv6_prefix_len = prefix_len,
    };
    struct conncap *cc = conncap_new(&lim);
    cr_assert_not_null(cc);
    return cc;
}

Test(conncap, per_ip)
{
    struct conncap *cc = make(0, 0, 2, 0, 64);
    struct conncap_ticket t[4];
    struct conncap_stats st;
    cr_assert_eq(conncap_acquire(cc, "192.0.2.1", &t[0]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "::ffff:192.0.2.1", &t[1]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "192.0.2.1", &t[2]), CONNCAP_PER_IP,
                 "IPv4-mapped counts as the same address");
    cr_assert_eq(t[2].counted, 0);
    cr_assert_null(t[2].ip);
    cr_assert_eq(conncap_acquire(cc, "192.0.2.2", &t[3]), CONNCAP_OK, "another address");
    conncap_release(cc, &t[2]); /* a refused ticket holds nothing */
    conncap_stats(cc, &st);
    cr_assert_eq(st.current, 3);
    cr_assert_eq(st.refused[CONNCAP_PER_IP], 1);

    conncap_release(cc, &t[0]);
    cr_assert_eq(conncap_acquire(cc, "192.0.2.1", &t[0]), CONNCAP_OK, "room again");
    conncap_release(cc, &t[0]);
    conncap_release(cc, &t[1]);
    conncap_release(cc, &t[3]);
    conncap_stats(cc, &st);
    cr_assert_eq(st.current, 0);
    cr_assert_eq(st.peak, 3);
    cr_assert_eq(st.accepted, 4);
    conncap_free(cc);
}

Test(conncap, per_ipv6_prefix)
{
    struct conncap *cc = make(0, 0, 2, 3, 64);
    struct conncap_ticket t[8];
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1::1", &t[0]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1::1", &t[1]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1::1", &t[2]), CONNCAP_PER_IP);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1:ffff::2", &t[2]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1:abcd::3", &t[3]), CONNCAP_PER_PREFIX,
                 "a fresh address of the same /64");
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:2::1", &t[3]), CONNCAP_OK, "another /64");
    /* the refused prefix must not have kept the address's count */
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1:abcd::3", &t[4]), CONNCAP_PER_PREFIX);
    conncap_release(cc, &t[0]);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1:abcd::3", &t[4]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1:abcd::3", &t[5]), CONNCAP_PER_PREFIX);
    /* IPv4 has no prefix cap */
    cr_assert_eq(conncap_acquire(cc, "198.51.100.1", &t[5]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "198.51.100.2", &t[6]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "198.51.100.3", &t[7]), CONNCAP_OK);
    for (int i = 1; i < 8; i++) {
        conncap_release(cc, &t[i]);
    }
    struct conncap_stats st;
    conncap_stats(cc, &st);
    cr_assert_eq(st.current, 0);
    cr_assert_eq(st.refused[CONNCAP_PER_PREFIX], 3);
    cr_assert_eq(st.refused[CONNCAP_PER_IP], 1);
    conncap_free(cc);

    /* a /48 groups wider */
    cc = make(0, 0, 0, 1, 48);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:1::1", &t[0]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:1:ffff::1", &t[1]), CONNCAP_PER_PREFIX);
    cr_assert_eq(conncap_acquire(cc, "2001:db8:2::1", &t[1]), CONNCAP_OK);
    conncap_release(cc, &t[0]);
    conncap_release(cc, &t[1]);
    conncap_free(cc);
}

Test(conncap, total_and_descriptors)
{
    struct conncap *cc = make(3, 0, 0, 0, 64);
    struct conncap_ticket t[4];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conncap_acquire(cc, "192.0.2.1", &t[i]), CONNCAP_OK);
    }
    cr_assert_eq(conncap_acquire(cc, "192.0.2.9", &t[3]), CONNCAP_TOTAL);
    conncap_release(cc, &t[1]);
    cr_assert_eq(conncap_acquire(cc, "192.0.2.9", &t[3]), CONNCAP_OK);
    conncap_release(cc, &t[0]);
    conncap_release(cc, &t[2]);
    conncap_release(cc, &t[3]);
    conncap_free(cc);

    cc = make(0, 2, 0, 0, 64);
    cr_assert_eq(conncap_acquire(cc, "192.0.2.1", &t[0]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "2001:db8::1", &t[1]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "2001:db8::2", &t[2]), CONNCAP_DESCRIPTORS);
    struct conncap_stats st;
    conncap_stats(cc, &st);
    cr_assert_eq(st.refused[CONNCAP_DESCRIPTORS], 1);
    conncap_release(cc, &t[0]);
    conncap_release(cc, &t[1]);
    conncap_free(cc);

    /* NULL caps: everything passes, nothing is counted */
    cr_assert_eq(conncap_acquire(NULL, "192.0.2.1", &t[0]), CONNCAP_OK);
    cr_assert_eq(t[0].counted, 0);
    conncap_release(NULL, &t[0]);
    conncap_free(NULL);
}

Test(conncap, unparsed_addresses_share_one_count)
{
    struct conncap *cc = make(0, 0, 1, 1, 64);
    struct conncap_ticket t[2];
    cr_assert_eq(conncap_acquire(cc, "", &t[0]), CONNCAP_OK);
    cr_assert_eq(conncap_acquire(cc, "garbage", &t[1]), CONNCAP_PER_IP);
    conncap_release(cc, &t[0]);
    conncap_free(cc);
}

Test(conncap, texts)
{
    cr_assert_str_eq(conncap_bye(CONNCAP_PER_IP),
                     "[UNAVAILABLE] Too many connections from your address");
    cr_assert_str_eq(conncap_bye(CONNCAP_PER_PREFIX),
                     "[UNAVAILABLE] Too many connections from your address");
    cr_assert_str_eq(conncap_bye(CONNCAP_TOTAL), "[UNAVAILABLE] Server busy, try again later");
    cr_assert_str_eq(conncap_bye(CONNCAP_DESCRIPTORS),
                     "[UNAVAILABLE] Server busy, try again later");
    for (int v = 0; v < CONNCAP_NUM_VERDICTS; v++) {
        cr_assert_not_null(conncap_reason((enum conncap_verdict)v));
    }
}

Test(conncap, descriptor_room)
{
    struct config cfg;
    struct config_backend b[2];
    memset(&cfg, 0, sizeof(cfg));
    memset(b, 0, sizeof(b));
    cfg.num_listeners = 2;
    cfg.backends = b;
    cfg.num_backends = 2;
    b[0].pool_size = 4;
    b[0].num_hosts = 3;
    b[1].num_hosts = 5;
    /* reserved: 64 + 2 workers * (16 + 2 listeners + 12 warm) = 124 */
    cr_assert_eq(conncap_descriptor_room(&cfg, 2, 1024), (1024 - 124) / 2);
    cfg.session_cache.enabled = 1;
    cfg.session_cache.max_total = 100;
    cr_assert_eq(conncap_descriptor_room(&cfg, 2, 1024), (1024 - 324) / 2);
    cr_assert_eq(conncap_descriptor_room(&cfg, 2, 300), 1, "never 0: that would mean no cap");
    cr_assert_eq(conncap_descriptor_room(&cfg, 2, 0), 0, "unlimited descriptors: no cap");
    cr_assert_eq(conncap_descriptor_room(&cfg, 0, 1024), (1024 - 64 - 130) / 2,
                 "0 workers counts as one");
}

Test(conncap, limits_from_config)
{
    struct config cfg;
    struct conncap_limits lim;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_connections = 10;
    cfg.max_connections_per_ip = 3;
    cfg.max_connections_per_ipv6_prefix = 7;
    cfg.ipv6_prefix_len = 56;
    conncap_limits_from_config(&lim, &cfg, 99);
    cr_assert_eq(lim.max_total, 10);
    cr_assert_eq(lim.max_descriptors, 99);
    cr_assert_eq(lim.max_per_ip, 3);
    cr_assert_eq(lim.max_per_prefix, 7);
    cr_assert_eq(lim.ipv6_prefix_len, 56);
}

/* --- threads ---------------------------------------------------------------- */

#define THREADS 4
#define ROUNDS 5000
#define HELD 8 /* tickets a thread holds at once */

struct racer {
    struct conncap *cc;
    int id;
    unsigned refused;
    unsigned accepted;
};

static void racer_main(void *arg)
{
    struct racer *r = arg;
    struct conncap_ticket held[HELD];
    char ip[64];
    memset(held, 0, sizeof(held));
    for (int i = 0; i < ROUNDS; i++) {
        int slot = i % HELD;
        conncap_release(r->cc, &held[slot]);
        /* every thread draws from the same small set of addresses and /64s */
        if (i % 2 == 0) {
            snprintf(ip, sizeof(ip), "192.0.2.%d", i % 5);
        } else {
            snprintf(ip, sizeof(ip), "2001:db8:0:%x::%x", i % 3, (i * 7 + r->id) % 11);
        }
        if (conncap_acquire(r->cc, ip, &held[slot]) == CONNCAP_OK) {
            r->accepted++;
        } else {
            r->refused++;
        }
    }
    for (int i = 0; i < HELD; i++) {
        conncap_release(r->cc, &held[i]);
    }
}

Test(conncap, threads_in_parallel)
{
    struct conncap *cc = make(20, 0, 3, 4, 64);
    struct racer r[THREADS];
    uv_thread_t th[THREADS];
    struct conncap_stats st;
    unsigned accepted = 0, refused = 0;
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct racer){.cc = cc, .id = i};
        cr_assert_eq(uv_thread_create(&th[i], racer_main, &r[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(uv_thread_join(&th[i]), 0);
        accepted += r[i].accepted;
        refused += r[i].refused;
    }
    conncap_stats(cc, &st);
    cr_assert_eq(st.current, 0, "every ticket came back");
    cr_assert_eq(st.accepted, accepted);
    cr_assert_eq(accepted + refused, THREADS * ROUNDS);
    cr_assert_gt(refused, 0, "the caps were reached");
    cr_assert_gt(accepted, 0);
    /* 5 IPv4 addresses x 3 + 3 /64s x 4 = 27 > 20: the total bounds the peak */
    cr_assert_leq(st.peak, 20);
    uint64_t sum = 0;
    for (int v = 0; v < CONNCAP_NUM_VERDICTS; v++) {
        sum += st.refused[v];
    }
    cr_assert_eq(sum, refused);
    /* the table is empty again: a full set of addresses fits */
    struct conncap_ticket t[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conncap_acquire(cc, "192.0.2.0", &t[i]), CONNCAP_OK);
    }
    for (int i = 0; i < 3; i++) {
        conncap_release(cc, &t[i]);
    }
    conncap_free(cc);
}
