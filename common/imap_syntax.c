#include "common/imap_syntax.h"

#include <strings.h>

int imap_syntax_is_tag_char(uint8_t c)
{
    if (c <= 0x20 || c >= 0x7f) {
        return 0;
    }
    switch (c) {
    case '(':
    case ')':
    case '{':
    case '%':
    case '*':
    case '"':
    case '\\':
    case '+':
        return 0;
    default:
        return 1;
    }
}

int imap_syntax_is_tag(const uint8_t *p, size_t len)
{
    if (len == 0) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (!imap_syntax_is_tag_char(p[i])) {
            return 0;
        }
    }
    return 1;
}

int imap_syntax_is_bye(const uint8_t *line, size_t len)
{
    if (len < 5 || line[0] != '*' || line[1] != ' ' ||
        strncasecmp((const char *)line + 2, "BYE", 3) != 0) {
        return 0;
    }
    return len == 5 || line[5] == ' ' || line[5] == '\r' || line[5] == '\n';
}
