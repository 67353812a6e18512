/* redis: one asynchronous Redis connection on a worker's loop (hiredis with
 * its libuv adapter), with what hiredis 0.14 leaves to its user: connect and
 * command timeouts, reconnects with a growing backoff, AUTH and SELECT, and
 * finding the master through Sentinel (and following a failover: a lost
 * connection, a READONLY reply or a master that turned replica sends us back
 * to the sentinels).  A connection either carries commands or, given a
 * channel, is subscribed to it and delivers its messages. */
#ifndef IMAPMUX_PROXY_REDIS_H
#define IMAPMUX_PROXY_REDIS_H

#include <stddef.h>

#include <uv.h>

#include <hiredis/hiredis.h>

#include "common/config.h"

struct rclient;

struct rclient_ops {
    /* on_up: the connection became usable (up = 1) or stopped being so (0) */
    void (*on_up)(void *ctx, int up);
    /* on_message: a message on the subscribed channel */
    void (*on_message)(void *ctx, const char *msg, size_t len);
};

/* reply is NULL when the command failed: connection lost, timed out, or the
 * client closed.  An error reply is passed as it is (REDIS_REPLY_ERROR). */
typedef void (*rclient_cb)(void *ctx, const redisReply *reply);

/* rclient_new starts connecting at once.  cfg (borrowed) outlives the
 * client.  channel: NULL for a command connection, else the channel to
 * subscribe to.  name is for the log ("redis", "redis-events"). */
struct rclient *rclient_new(uv_loop_t *loop, const struct config_redis *cfg, const char *channel,
                            const char *name, const struct rclient_ops *ops, void *ctx);

/* rclient_is_up: commands can be sent now. */
int rclient_is_up(const struct rclient *rc);

/* rclient_cmd sends one command (argv form).  Returns 0 and cb is called
 * exactly once later; or -1 when the connection is not up (cb never called). */
int rclient_cmd(struct rclient *rc, rclient_cb cb, void *ctx, int argc, const char **argv,
                const size_t *lens);

/* rclient_close fails pending commands (their cb gets NULL), closes the
 * connection and frees the client once its handles are closed. */
void rclient_close(struct rclient *rc);

#endif
