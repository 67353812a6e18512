#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common/passwd.h"

Test(passwd, detect)
{
    cr_assert_eq(passwd_detect("$6$salt$hash"), PASSWD_SHA512_CRYPT);
    cr_assert_eq(passwd_detect("$2b$10$x"), PASSWD_BCRYPT);
    cr_assert_eq(passwd_detect("$2y$10$x"), PASSWD_BCRYPT);
    cr_assert_eq(passwd_detect("$y$j9T$x"), PASSWD_YESCRYPT);
    cr_assert_eq(passwd_detect("$argon2id$v=19$x"), PASSWD_ARGON2ID);
    cr_assert_eq(passwd_detect("$argon2i$v=19$x"), PASSWD_UNKNOWN);
    cr_assert_eq(passwd_detect("$1$md5"), PASSWD_UNKNOWN);
    cr_assert_eq(passwd_detect(""), PASSWD_UNKNOWN);
    cr_assert_eq(passwd_detect(NULL), PASSWD_UNKNOWN);
    enum passwd_scheme s;
    for (int i = PASSWD_SHA512_CRYPT; i <= PASSWD_ARGON2ID; i++) {
        cr_assert_eq(passwd_scheme_parse(passwd_scheme_name((enum passwd_scheme)i), &s), 0);
        cr_assert_eq(s, i);
    }
    cr_assert_eq(passwd_scheme_parse("md5", &s), -1);
}

Test(passwd, round_trip_each_scheme)
{
    for (int i = PASSWD_SHA512_CRYPT; i <= PASSWD_ARGON2ID; i++) {
        char *a = passwd_hash((enum passwd_scheme)i, "correct horse");
        char *b = passwd_hash((enum passwd_scheme)i, "correct horse");
        cr_assert_not_null(a, "scheme %d", i);
        cr_assert_not_null(b);
        cr_assert_eq(passwd_detect(a), i, "%s", a);
        cr_assert_str_neq(a, b, "salts must differ");
        cr_assert_eq(passwd_verify(a, "correct horse"), 1, "%s", a);
        cr_assert_eq(passwd_verify(a, "correct horsf"), 0, "%s", a);
        cr_assert_eq(passwd_verify(a, ""), 0);
        free(a);
        free(b);
    }
}

Test(passwd, vectors_from_other_tools)
{
    /* made with "openssl passwd -6 -salt saltsalt secret" and Python's crypt
     * (libxcrypt) for yescrypt and bcrypt */
    cr_assert_eq(passwd_verify("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1", "secret"), 1);
    cr_assert_eq(passwd_verify("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1", "Secret"), 0);
    cr_assert_eq(passwd_verify("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$6foLM1JhGupouWKMU70wxK61Kw9ZnecbACjJwRadqM2", "x"), 1);
    cr_assert_eq(passwd_verify("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$6foLM1JhGupouWKMU70wxK61Kw9ZnecbACjJwRadqM2", "y"), 0);
}

Test(passwd, malformed_hashes)
{
    const char *bad[] = {"$6$", "$y$abc", "$argon2id$v=19$garbage", "$2b$04$short", "plain",
                         "$argon2id$", "*"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_neq(passwd_verify(bad[i], "pw"), 1, "%s", bad[i]);
    }
    cr_assert_eq(passwd_verify("$2b$04$short", "pw"), -1);
    cr_assert_eq(passwd_verify("plain", "pw"), -1);
    cr_assert_null(passwd_hash(PASSWD_UNKNOWN, "pw"));
}

Test(passwd, long_password)
{
    /* libcrypt takes at most 512 bytes: longer never matches a crypt hash;
     * argon2id takes any length */
    char pw[4097];
    memset(pw, 'p', sizeof(pw) - 1);
    pw[sizeof(pw) - 1] = '\0';
    char *c = passwd_hash(PASSWD_SHA512_CRYPT, "short");
    cr_assert_not_null(c);
    cr_assert_neq(passwd_verify(c, pw), 1);
    free(c);
    char *h = passwd_hash(PASSWD_ARGON2ID, pw);
    cr_assert_not_null(h);
    cr_assert_eq(passwd_verify(h, pw), 1);
    pw[100] = 'q';
    cr_assert_eq(passwd_verify(h, pw), 0);
    free(h);
}
