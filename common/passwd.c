#include "common/passwd.h"

#include <stdlib.h>
#include <string.h>

#include <argon2.h>
#include <crypt.h>

#include <openssl/mem.h>
#include <openssl/rand.h>

#define PASSWD_ARGON2_T 2
#define PASSWD_ARGON2_M 19456 /* KiB */
#define PASSWD_ARGON2_P 1
#define PASSWD_ARGON2_SALT 16
#define PASSWD_ARGON2_HASH 32
#define PASSWD_BCRYPT_COST 10

enum passwd_scheme passwd_detect(const char *hash)
{
    if (hash == NULL) {
        return PASSWD_UNKNOWN;
    }
    if (strncmp(hash, "$6$", 3) == 0) {
        return PASSWD_SHA512_CRYPT;
    }
    if (strncmp(hash, "$2b$", 4) == 0 || strncmp(hash, "$2a$", 4) == 0 ||
        strncmp(hash, "$2y$", 4) == 0) {
        return PASSWD_BCRYPT;
    }
    if (strncmp(hash, "$y$", 3) == 0) {
        return PASSWD_YESCRYPT;
    }
    if (strncmp(hash, "$argon2id$", 10) == 0) {
        return PASSWD_ARGON2ID;
    }
    return PASSWD_UNKNOWN;
}

static const char *const passwd_names[] = {
    "unknown", "sha512-crypt", "bcrypt", "yescrypt", "argon2id",
};

const char *passwd_scheme_name(enum passwd_scheme scheme)
{
    if ((unsigned)scheme >= sizeof(passwd_names) / sizeof(passwd_names[0])) {
        return "unknown";
    }
    return passwd_names[scheme];
}

int passwd_scheme_parse(const char *name, enum passwd_scheme *out)
{
    for (size_t i = 1; i < sizeof(passwd_names) / sizeof(passwd_names[0]); i++) {
        if (strcmp(name, passwd_names[i]) == 0) {
            *out = (enum passwd_scheme)i;
            return 0;
        }
    }
    return -1;
}

/* passwd_crypt runs crypt_r with its large state on the heap; the result
 * is copied out (malloc'd) or NULL when crypt refuses the setting. */
static char *passwd_crypt(const char *password, const char *setting)
{
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    char *out = NULL;
    if (cd == NULL) {
        return NULL;
    }
    const char *r = crypt_r(password, setting, cd);
    if (r != NULL && r[0] != '*') {
        out = strdup(r);
    }
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    return out;
}

int passwd_verify(const char *hash, const char *password)
{
    switch (passwd_detect(hash)) {
    case PASSWD_SHA512_CRYPT:
    case PASSWD_BCRYPT:
    case PASSWD_YESCRYPT: {
        char *r = passwd_crypt(password, hash);
        if (r == NULL) {
            return -1;
        }
        size_t n = strlen(r);
        int ok = n == strlen(hash) && CRYPTO_memcmp(r, hash, n) == 0;
        OPENSSL_cleanse(r, n);
        free(r);
        return ok;
    }
    case PASSWD_ARGON2ID: {
        int r = argon2id_verify(hash, password, strlen(password));
        if (r == ARGON2_OK) {
            return 1;
        }
        return r == ARGON2_VERIFY_MISMATCH ? 0 : -1;
    }
    case PASSWD_UNKNOWN:
        break;
    }
    return -1;
}

static char *passwd_hash_argon2id(const char *password)
{
    uint8_t salt[PASSWD_ARGON2_SALT];
    RAND_bytes(salt, sizeof(salt));
    size_t len = argon2_encodedlen(PASSWD_ARGON2_T, PASSWD_ARGON2_M, PASSWD_ARGON2_P,
                                   sizeof(salt), PASSWD_ARGON2_HASH, Argon2_id);
    char *out = malloc(len);
    if (out == NULL) {
        return NULL;
    }
    if (argon2id_hash_encoded(PASSWD_ARGON2_T, PASSWD_ARGON2_M, PASSWD_ARGON2_P, password,
                              strlen(password), salt, sizeof(salt), PASSWD_ARGON2_HASH, out,
                              len) != ARGON2_OK) {
        free(out);
        return NULL;
    }
    return out;
}

char *passwd_hash(enum passwd_scheme scheme, const char *password)
{
    const char *prefix;
    unsigned long count = 0;
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];

    switch (scheme) {
    case PASSWD_SHA512_CRYPT:
        prefix = "$6$";
        break;
    case PASSWD_BCRYPT:
        prefix = "$2b$";
        count = PASSWD_BCRYPT_COST;
        break;
    case PASSWD_YESCRYPT:
        prefix = "$y$";
        break;
    case PASSWD_ARGON2ID:
        return passwd_hash_argon2id(password);
    default:
        return NULL;
    }
    if (crypt_gensalt_rn(prefix, count, NULL, 0, setting, sizeof(setting)) == NULL) {
        return NULL;
    }
    return passwd_crypt(password, setting);
}
