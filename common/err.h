/* err: the project's own error codes.  Functions return 0 or a negative
 * code; libuv's UV_E* codes pass through unchanged where their meaning fits,
 * and the codes here sit below libuv's range (which ends above -4100) so
 * that the two never collide. */
#ifndef IMAPMUX_COMMON_ERR_H
#define IMAPMUX_COMMON_ERR_H

#define IMAPMUX_E_TLS (-20001)      /* a TLS failure; conn_tls_error() says which */
#define IMAPMUX_E_COMPRESS (-20002) /* a corrupt compressed stream; conn_compress_error() */

#endif
