/* b64: the digit table shared by the base64 alphabets imapmux reads: the
 * standard one (RFC 4648 section 4: "+/"), base64url (section 5: "-_") and
 * modified UTF-7's (RFC 3501 section 5.1.3: "+,"). */
#ifndef IMAPMUX_COMMON_B64_H
#define IMAPMUX_COMMON_B64_H

/* b64_digit returns the value (0-63) of c in the alphabet whose last two
 * digits are c62 and c63, or -1 when c is no digit of it. */
static inline int b64_digit(unsigned char c, unsigned char c62, unsigned char c63)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == c62) {
        return 62;
    }
    return c == c63 ? 63 : -1;
}

#endif
