/* audit_chain: the hash chain of the audit file.  Every line is a JSON
 * record whose last field is "chain": the hex SHA-256 of the previous line's
 * chain value (32 bytes) followed by the record as it is without that field.
 * A file starts with a "chain_start" record naming the chain value it
 * continues from ("prev"), so a rotated file can be checked on its own, and
 * a clean stop writes "chain_end".  Deleting, reordering or altering a line
 * breaks the chain from that line on.  Shared by the daemon's writer and
 * imapmuxctl audit verify.  Pure code. */
#ifndef IMAPMUX_COMMON_AUDIT_CHAIN_H
#define IMAPMUX_COMMON_AUDIT_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_CHAIN_LEN 32
#define AUDIT_CHAIN_HEX_LEN 64

struct audit_chain {
    uint8_t prev[AUDIT_CHAIN_LEN]; /* chain value of the last line */
};

/* audit_chain_seal writes record (a JSON object, len bytes, ending in '}')
 * with its "chain" field and a newline to out; returns the bytes written, or
 * 0 when cap is too small (len + 80 is enough).  Advances the chain. */
size_t audit_chain_seal(struct audit_chain *c, const char *record, size_t len, char *out,
                        size_t cap);

/* audit_chain_check checks one line (without its newline) against the chain
 * and advances it.  Returns 0, -1 when the line has no chain field, -2 when
 * the value does not match. */
int audit_chain_check(struct audit_chain *c, const char *line, size_t len);

/* audit_chain_field finds "name":"<64 hex>" in line and decodes it into out;
 * 0 or -1.  Used for "prev" of a chain_start and "chain" of a last line. */
int audit_chain_field(const char *line, size_t len, const char *name,
                      uint8_t out[AUDIT_CHAIN_LEN]);

/* What the end of an audit file says about the chain it continues. */
enum audit_chain_tail {
    AUDIT_TAIL_EMPTY,   /* the file is empty: a new chain */
    AUDIT_TAIL_OK,      /* its last line is a whole chained record: go on from it */
    AUDIT_TAIL_CUT,     /* as OK, but a record cut short follows it (a writer died
                         * mid-write): the cut bytes go, the chain goes on */
    AUDIT_TAIL_UNENDED, /* its last line is a whole chained record without its
                         * newline: add it, go on from that record */
    AUDIT_TAIL_MORE,    /* the last line starts before the bytes given: read more */
    AUDIT_TAIL_BROKEN,  /* the end is no chained record (nor one cut short) */
};

#define AUDIT_CHAIN_TAIL_MAX 65536 /* bytes of a file's end that must hold its last
                                    * line and a cut one (a record is at most 8 KiB) */

/* audit_chain_tail reads the end of an audit file: buf holds its last len
 * bytes, at_start says they are the whole file.  A last line counts when it
 * is strictly valid JSON ending in a chain field; a cut line when it is a
 * valid object cut short (json_check_prefix).  On OK, CUT and UNENDED,
 * out_chain gets the chain value to go on from and *out_ended says the
 * record is a chain_end; on CUT, *out_cut_len is the number of bytes at the
 * end to drop (0 otherwise).  Nothing is kept after the call. */
enum audit_chain_tail audit_chain_tail(uint8_t out_chain[AUDIT_CHAIN_LEN], size_t *out_cut_len,
                                       int *out_ended, const char *buf, size_t len,
                                       int at_start);

/* audit_chain_hex writes the 64 hex digits of v and a NUL. */
void audit_chain_hex(char out[AUDIT_CHAIN_HEX_LEN + 1], const uint8_t v[AUDIT_CHAIN_LEN]);

#endif
