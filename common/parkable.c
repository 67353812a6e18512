#include "common/parkable.h"

#include <string.h>
#include <strings.h>

#include "common/imap_syntax.h"

#define PARKABLE_LOGOUT_LEN 9 /* " LOGOUT" CRLF */

int parkable_name(const char *name)
{
    static const char *const sticky[] = {
        "ENABLE", "COMPRESS", "NOTIFY", "LANGUAGE", "UNAUTHENTICATE", "CONTEXT", "STARTTLS",
    };
    if (name[0] == 'X' || name[0] == 'x') {
        return 0; /* a vendor command may change anything */
    }
    for (size_t i = 0; i < sizeof(sticky) / sizeof(sticky[0]); i++) {
        if (strcasecmp(name, sticky[i]) == 0) {
            return 0;
        }
    }
    return 1;
}

size_t parkable_logout(const uint8_t *data, size_t len, size_t max_tag_len)
{
    if (len <= PARKABLE_LOGOUT_LEN || len > max_tag_len + PARKABLE_LOGOUT_LEN ||
        data[len - 2] != '\r' || data[len - 1] != '\n' ||
        strncasecmp((const char *)data + len - PARKABLE_LOGOUT_LEN, " LOGOUT", 7) != 0) {
        return 0;
    }
    size_t tag_len = len - PARKABLE_LOGOUT_LEN;
    return imap_syntax_is_tag(data, tag_len) ? tag_len : 0;
}
