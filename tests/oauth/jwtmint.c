/* jwtmint: keys and tokens for the OAuth integration tests, made with
 * BoringSSL (so that the tests need no Python crypto module).
 *
 *   jwtmint keys DIR                      RSA 2048, EC P-256 and Ed25519 keys in
 *                                         DIR (rsa.der, ec.der, ed.key) and their
 *                                         key set DIR/jwks.json (kids rsa1, ec1, ed1)
 *   jwtmint sign DIR ALG HEADER PAYLOAD   a compact token signed with DIR's key
 *                                         for ALG (RS256, ES256, EdDSA); HEADER and
 *                                         PAYLOAD are JSON written as given
 * Test code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec_key.h>
#include <openssl/mem.h>
#include <openssl/rsa.h>

#include "jwt_mint.h"

static void put(const char *dir, const char *name, const uint8_t *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static uint8_t *get(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    static uint8_t buf[65536];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    *len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    struct jwt_mint_keys k;
    memset(&k, 0, sizeof(k));
    if (argc == 3 && strcmp(argv[1], "keys") == 0) {
        jwt_mint_generate(&k);
        uint8_t *der = NULL;
        int n = i2d_RSAPrivateKey(k.rsa, &der);
        put(argv[2], "rsa.der", der, (size_t)n);
        OPENSSL_free(der);
        der = NULL;
        n = i2d_ECPrivateKey(k.ec, &der);
        put(argv[2], "ec.der", der, (size_t)n);
        OPENSSL_free(der);
        put(argv[2], "ed.key", k.ed_priv, sizeof(k.ed_priv));
        char *jwks = jwt_mint_jwks(&k, "rsa1", "ec1", "ed1");
        put(argv[2], "jwks.json", (const uint8_t *)jwks, strlen(jwks));
        free(jwks);
        jwt_mint_free(&k);
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "sign") == 0) {
        enum jwt_alg alg;
        size_t len = 0;
        const uint8_t *p;
        if (strcmp(argv[3], "RS256") == 0) {
            alg = JWT_ALG_RS256;
            p = get(argv[2], "rsa.der", &len);
            k.rsa = d2i_RSAPrivateKey(NULL, &p, (long)len);
        } else if (strcmp(argv[3], "ES256") == 0) {
            alg = JWT_ALG_ES256;
            p = get(argv[2], "ec.der", &len);
            k.ec = d2i_ECPrivateKey(NULL, &p, (long)len);
        } else if (strcmp(argv[3], "EdDSA") == 0) {
            alg = JWT_ALG_EDDSA;
            p = get(argv[2], "ed.key", &len);
            if (len != sizeof(k.ed_priv)) {
                return 1;
            }
            memcpy(k.ed_priv, p, len);
        } else {
            fprintf(stderr, "jwtmint: unknown algorithm\n");
            return 2;
        }
        if ((alg == JWT_ALG_RS256 && k.rsa == NULL) || (alg == JWT_ALG_ES256 && k.ec == NULL)) {
            fprintf(stderr, "jwtmint: unreadable key\n");
            return 1;
        }
        char *tok = jwt_mint_sign(&k, alg, argv[4], argv[5]);
        printf("%s\n", tok);
        free(tok);
        jwt_mint_free(&k);
        return 0;
    }
    fprintf(stderr, "usage: jwtmint keys DIR | jwtmint sign DIR ALG HEADER PAYLOAD\n");
    return 2;
}
