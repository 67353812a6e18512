#include <string.h>

#include <criterion/criterion.h>

#include "common/sasl_plain.h"
#include "secret_watch.h"

static int decode(struct sasl_plain *p, const char *b64)
{
    return sasl_plain_decode(p, b64, strlen(b64));
}

Test(sasl_plain, without_authzid)
{
    struct sasl_plain p;
    /* "\0alice\0secret" */
    cr_assert_eq(decode(&p, "AGFsaWNlAHNlY3JldA=="), 0);
    cr_assert_str_eq(p.authzid, "");
    cr_assert_str_eq(p.authcid, "alice");
    cr_assert_str_eq(p.passwd, "secret");
    sasl_plain_cleanup(&p);
    cr_assert_null(p.buf);
}

Test(sasl_plain, with_authzid)
{
    struct sasl_plain p;
    /* "bob\0admin\0pw" */
    cr_assert_eq(decode(&p, "Ym9iAGFkbWluAHB3"), 0);
    cr_assert_str_eq(p.authzid, "bob");
    cr_assert_str_eq(p.authcid, "admin");
    cr_assert_str_eq(p.passwd, "pw");
    sasl_plain_cleanup(&p);
}

Test(sasl_plain, bad_base64)
{
    struct sasl_plain p;
    cr_assert_eq(decode(&p, "AGFsaWNlAHNlY3JldA="), SASL_PLAIN_E_BASE64); /* bad padding */
    cr_assert_eq(decode(&p, "AGFs aWNl"), SASL_PLAIN_E_BASE64);           /* whitespace */
    cr_assert_eq(decode(&p, "!!!!"), SASL_PLAIN_E_BASE64);
    cr_assert_null(p.buf);
}

Test(sasl_plain, missing_nuls)
{
    struct sasl_plain p;
    cr_assert_eq(decode(&p, "YWxpY2U="), SASL_PLAIN_E_FORMAT);         /* "alice" */
    cr_assert_eq(decode(&p, "AGFsaWNl"), SASL_PLAIN_E_FORMAT);         /* "\0alice" */
    cr_assert_eq(decode(&p, "AGFsaWNlAHB3AHg="), SASL_PLAIN_E_FORMAT); /* extra NUL */
    cr_assert_eq(decode(&p, ""), SASL_PLAIN_E_FORMAT);
}

Test(sasl_plain, empty_fields)
{
    struct sasl_plain p;
    cr_assert_eq(decode(&p, "AABwdw=="), SASL_PLAIN_E_EMPTY); /* "\0\0pw" */
    cr_assert_eq(decode(&p, "AGFsaWNlAA=="), SASL_PLAIN_E_EMPTY); /* "\0alice\0" */
}

Test(sasl_plain, too_long)
{
    struct sasl_plain p;
    size_t n = SASL_PLAIN_MAX_B64_LEN + 4;
    char *big = malloc(n + 1);
    memset(big, 'A', n);
    big[n] = '\0';
    cr_assert_eq(decode(&p, big), SASL_PLAIN_E_TOO_LONG);
    free(big);
}

Test(sasl_plain, round_trip)
{
    struct sasl_plain p;
    size_t len = 0;
    char *b64 = sasl_plain_encode(&len, "zid", "user@example.com", "p\xc3\xa4ss w\"rd");
    cr_assert_not_null(b64);
    cr_assert_eq(len, strlen(b64));
    cr_assert_eq(sasl_plain_decode(&p, b64, len), 0);
    cr_assert_str_eq(p.authzid, "zid");
    cr_assert_str_eq(p.authcid, "user@example.com");
    cr_assert_str_eq(p.passwd, "p\xc3\xa4ss w\"rd");
    sasl_plain_cleanup(&p);
    free(b64);
}

Test(sasl_plain, strerror_is_fixed)
{
    cr_assert_str_eq(sasl_plain_strerror(SASL_PLAIN_E_BASE64), "invalid base64");
    cr_assert_str_eq(sasl_plain_strerror(-99), "unknown error");
}

Test(sasl_plain, every_decode_path_wipes_its_buffer)
{
    struct sasl_plain p;
    struct secret_watch w;

    secret_watch_start(&w);
    /* "\0alice\0secre" decodes before the bad group: wiped all the same */
    cr_assert_eq(decode(&p, "AGFsaWNlAHNlY3Jl!!!!"), SASL_PLAIN_E_BASE64);
    cr_assert_eq(w.blocks, 1);
    cr_assert_eq(w.bytes, 16); /* all that was allocated, not only what decoded */
    /* "alice" without NULs, then "\0\0pw" with an empty authcid */
    cr_assert_eq(decode(&p, "YWxpY2U="), SASL_PLAIN_E_FORMAT);
    cr_assert_eq(decode(&p, "AABwdw=="), SASL_PLAIN_E_EMPTY);
    cr_assert_eq(w.blocks, 3);
    cr_assert_eq(decode(&p, "AGFsaWNlAHNlY3JldA=="), 0);
    sasl_plain_cleanup(&p);
    cr_assert_eq(w.blocks, 4);
    cr_assert_eq(w.dirty, 0);
    secret_watch_stop();
}

Test(sasl_plain, encode_wipes_its_raw_message)
{
    struct secret_watch w;
    size_t len = 0;

    secret_watch_start(&w);
    char *b64 = sasl_plain_encode(&len, "", "alice", "secret");
    cr_assert_not_null(b64);
    cr_assert_eq(w.blocks, 1);
    cr_assert_eq(w.bytes, strlen("alice") + strlen("secret") + 2);
    cr_assert_eq(w.dirty, 0);
    secret_free(b64, len + 1);
    cr_assert_eq(w.blocks, 2);
    cr_assert_eq(w.dirty, 0);
    secret_watch_stop();
}

Test(sasl_plain, leftover_bits_must_be_zero)
{
    /* "\0alice\0secret" ends in "dA==": 't' leaves 4 bits over; "dB==" sets
     * one of them and decoded to the same message (found by fuzz_sasl_plain) */
    struct sasl_plain p;
    cr_assert_eq(decode(&p, "AGFsaWNlAHNlY3JldB=="), SASL_PLAIN_E_BASE64);
    cr_assert_eq(decode(&p, "AGFsaWNlAHNlY3JldP=="), SASL_PLAIN_E_BASE64);
    cr_assert_null(p.buf);
    /* "\0ab\0cd" is "AGFiAGNk"; "\0ab\0c" ends in "Yw=": 'w' leaves 2 bits */
    cr_assert_eq(decode(&p, "AGFiAGM="), 0);
    sasl_plain_cleanup(&p);
    cr_assert_eq(decode(&p, "AGFiAGN="), SASL_PLAIN_E_BASE64);
    cr_assert_eq(decode(&p, "AGFiAGP="), SASL_PLAIN_E_BASE64);
}
