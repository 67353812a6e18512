#include "proxy/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "common/log.h"
#include "proxy/metrics.h"

#define RCLIENT_BACKOFF_FIRST_MS 100

enum rclient_state {
    RC_WAIT,       /* not connected; the timer starts the next attempt */
    RC_SENTINEL,   /* asking a sentinel for the master's address */
    RC_HANDSHAKE,  /* connected (or connecting) to Redis: AUTH, SELECT, ROLE/PING */
    RC_SUBSCRIBE,  /* SUBSCRIBE sent, waiting for its confirmation */
    RC_READY,
    RC_CLOSED,
};

struct rclient {
    uv_loop_t *loop;
    const struct config_redis *cfg;
    const char *channel;           /* NULL: command connection */
    char name[32];
    const struct rclient_ops *ops;
    void *ctx;

    redisAsyncContext *ac;         /* current connection, or NULL */
    enum rclient_state state;
    uv_timer_t timer;              /* attempt timeout, command timeout, or backoff */
    unsigned backoff_ms;
    size_t sentinel_idx;           /* next sentinel to ask */
    char host[256];                /* where the current connection goes */
    int port;
    size_t inflight;               /* user commands not yet answered on ac */
    int was_up;                    /* on_up(1) was reported */
    int failures_logged;           /* consecutive failures since the last success */
};

/* a command in flight: its callback is called exactly once */
struct rclient_req {
    struct rclient *rc;
    redisAsyncContext *ac;         /* the connection it was sent on */
    rclient_cb cb;
    void *ctx;
    uint64_t t0_ns;                /* uv_hrtime when sent */
};

static void rclient_connect(struct rclient *rc);
static void rclient_fail(struct rclient *rc, const char *why);

static void rclient_on_timer(uv_timer_t *t);

static void rclient_arm(struct rclient *rc, uint64_t ms)
{
    uv_timer_start(&rc->timer, rclient_on_timer, ms, 0);
}

static void rclient_set_up(struct rclient *rc, int up)
{
    if (up == rc->was_up) {
        return;
    }
    rc->was_up = up;
    metrics_redis_up(rc->channel != NULL, up);
    if (rc->ops != NULL && rc->ops->on_up != NULL) {
        rc->ops->on_up(rc->ctx, up);
    }
}

/* rclient_drop forgets the current connection and frees it; hiredis then
 * calls every pending callback with a NULL reply. */
static void rclient_drop(struct rclient *rc)
{
    redisAsyncContext *ac = rc->ac;
    rc->ac = NULL;
    rc->inflight = 0;
    if (ac != NULL) {
        redisAsyncFree(ac);
    }
}

static void rclient_fail(struct rclient *rc, const char *why)
{
    if (rc->state == RC_CLOSED) {
        return;
    }
    int was_ready = rc->state == RC_READY;
    rclient_drop(rc);
    rc->state = RC_WAIT;
    rclient_set_up(rc, 0);
    if (was_ready || rc->failures_logged == 0) {
        log_msg(LOG_WARNING, "%s: %s:%d: %s; retrying in %u ms", rc->name, rc->host, rc->port, why,
                rc->backoff_ms);
    } else {
        log_msg(LOG_DEBUG, "%s: %s:%d: %s; retrying in %u ms", rc->name, rc->host, rc->port, why,
                rc->backoff_ms);
    }
    rc->failures_logged++;
    rclient_arm(rc, rc->backoff_ms);
    rc->backoff_ms *= 2;
    if (rc->backoff_ms > rc->cfg->reconnect_max_ms) {
        rc->backoff_ms = rc->cfg->reconnect_max_ms;
    }
}

static void rclient_on_timer(uv_timer_t *t)
{
    struct rclient *rc = t->data;
    switch (rc->state) {
    case RC_WAIT:
        rclient_connect(rc);
        break;
    case RC_SENTINEL:
        rclient_fail(rc, "sentinel did not answer in time");
        break;
    case RC_HANDSHAKE:
    case RC_SUBSCRIBE:
        rclient_fail(rc, "no answer in time while connecting");
        break;
    case RC_READY:
        rclient_fail(rc, "command timed out");
        break;
    case RC_CLOSED:
        break;
    }
}

/* --- hiredis callbacks -------------------------------------------------------- */

static void rclient_on_connect(const redisAsyncContext *ac, int status)
{
    struct rclient *rc = ac->data;
    if (status == REDIS_OK || rc == NULL || ac != rc->ac) {
        return;
    }
    /* hiredis frees a context whose connect failed: forget it first */
    rc->ac = NULL;
    rclient_fail(rc, ac->errstr[0] ? ac->errstr : "cannot connect");
}

static void rclient_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rclient *rc = ac->data;
    if (rc == NULL || ac != rc->ac) {
        return;
    }
    rc->ac = NULL;
    rclient_fail(rc, status == REDIS_OK ? "connection closed"
                     : (ac->errstr[0] ? ac->errstr : "connection lost"));
}

/* --- the event adapter ------------------------------------------------------------
 * hiredis's own libuv adapter (adapters/libuv.h) asks the poll for
 * writability before every command and drops it after: with libuv 1.44 each
 * change is an epoll_ctl DEL and ADD, about four per command, and one write
 * per command.  This one keeps the read interest registered and writes from
 * a prepare handle just before the loop polls again: every command queued
 * in one loop turn (by any session) goes out in one write, and writability
 * is polled only while the socket is connecting or full. */

struct rclient_ev {
    redisAsyncContext *ac;  /* NULL once hiredis cleaned up */
    uv_poll_t poll;         /* poll.data = this */
    uv_prepare_t flush;     /* flush.data = this; runs while a write is wanted */
    int events;             /* what poll watches (UV_READABLE, UV_WRITABLE) */
    int in_flush;           /* redisAsyncHandleWrite runs from the prepare handle */
    int pending_closes;     /* handles not yet closed after cleanup */
};

static void rclient_ev_on_poll(uv_poll_t *h, int status, int events)
{
    struct rclient_ev *e = h->data;
    if (status != 0) {
        /* an error on the socket: let hiredis find it by reading */
        events = UV_READABLE;
    }
    if (e->ac != NULL && (events & UV_READABLE)) {
        redisAsyncHandleRead(e->ac);
    }
    if (e->ac != NULL && (events & UV_WRITABLE)) {
        redisAsyncHandleWrite(e->ac);
    }
}

static void rclient_ev_watch(struct rclient_ev *e, int events)
{
    if (events == e->events || e->ac == NULL) {
        return;
    }
    e->events = events;
    if (events != 0) {
        uv_poll_start(&e->poll, events, rclient_ev_on_poll);
    } else {
        uv_poll_stop(&e->poll);
    }
}

static void rclient_ev_on_flush(uv_prepare_t *h)
{
    struct rclient_ev *e = h->data;
    uv_prepare_stop(&e->flush);
    if (e->ac != NULL) {
        e->in_flush = 1;
        redisAsyncHandleWrite(e->ac); /* may clean up: e stays until the closes */
        e->in_flush = 0;
    }
}

static void rclient_ev_add_read(void *priv)
{
    struct rclient_ev *e = priv;
    rclient_ev_watch(e, e->events | UV_READABLE);
}

static void rclient_ev_del_read(void *priv)
{
    struct rclient_ev *e = priv;
    rclient_ev_watch(e, e->events & ~UV_READABLE);
}

static void rclient_ev_add_write(void *priv)
{
    struct rclient_ev *e = priv;
    if (e->ac == NULL) {
        return;
    }
    if (!(e->ac->c.flags & REDIS_CONNECTED) || e->in_flush) {
        /* connecting (writability says connected), or the socket took only
           part of the buffer: wait until it can take more */
        rclient_ev_watch(e, e->events | UV_WRITABLE);
    } else if (!(e->events & UV_WRITABLE)) {
        uv_prepare_start(&e->flush, rclient_ev_on_flush);
    }
}

static void rclient_ev_del_write(void *priv)
{
    struct rclient_ev *e = priv;
    uv_prepare_stop(&e->flush);
    rclient_ev_watch(e, e->events & ~UV_WRITABLE);
}

static void rclient_ev_on_close(uv_handle_t *h)
{
    struct rclient_ev *e = h->data;
    if (--e->pending_closes == 0) {
        free(e);
    }
}

static void rclient_ev_cleanup(void *priv)
{
    struct rclient_ev *e = priv;
    e->ac = NULL;
    e->pending_closes = 2;
    uv_close((uv_handle_t *)&e->poll, rclient_ev_on_close);
    uv_close((uv_handle_t *)&e->flush, rclient_ev_on_close);
}

/* rclient_ev_attach hooks ac to loop; REDIS_OK or REDIS_ERR (nothing to undo). */
static int rclient_ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL) {
        return REDIS_ERR;
    }
    struct rclient_ev *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return REDIS_ERR;
    }
    if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
        free(e);
        return REDIS_ERR;
    }
    uv_prepare_init(loop, &e->flush);
    e->ac = ac;
    e->poll.data = e;
    e->flush.data = e;
    ac->ev.data = e;
    ac->ev.addRead = rclient_ev_add_read;
    ac->ev.delRead = rclient_ev_del_read;
    ac->ev.addWrite = rclient_ev_add_write;
    ac->ev.delWrite = rclient_ev_del_write;
    ac->ev.cleanup = rclient_ev_cleanup;
    return REDIS_OK;
}

static redisAsyncContext *rclient_open(struct rclient *rc, const char *host, int port)
{
    snprintf(rc->host, sizeof(rc->host), "%s", host);
    rc->port = port;
    redisAsyncContext *ac = redisAsyncConnect(host, port);
    if (ac == NULL) {
        return NULL;
    }
    if (ac->err) {
        log_msg(LOG_DEBUG, "%s: %s:%d: %s", rc->name, host, port, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = rc;
    if (rclient_ev_attach(ac, rc->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, rclient_on_connect);
    redisAsyncSetDisconnectCallback(ac, rclient_on_disconnect);
    return ac;
}

static int rclient_is_error(const redisReply *r)
{
    return r == NULL || r->type == REDIS_REPLY_ERROR;
}

static void rclient_on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rclient *rc = priv;
    const redisReply *r = reply;
    if (r == NULL || ac != rc->ac) {
        return; /* torn down; the disconnect path handles it */
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        rclient_fail(rc, "unexpected reply on the subscribed connection");
        return;
    }
    const redisReply *kind = r->element[0];
    if (strcasecmp(kind->str, "subscribe") == 0) {
        if (rc->state == RC_SUBSCRIBE) {
            rc->state = RC_READY;
            uv_timer_stop(&rc->timer);
            rc->backoff_ms = RCLIENT_BACKOFF_FIRST_MS;
            if (rc->failures_logged > 0) {
                log_msg(LOG_NOTICE, "%s: subscribed again at %s:%d", rc->name, rc->host, rc->port);
            }
            rc->failures_logged = 0;
            rclient_set_up(rc, 1);
        }
        return;
    }
    if (strcasecmp(kind->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING &&
        rc->ops != NULL && rc->ops->on_message != NULL) {
        rc->ops->on_message(rc->ctx, r->element[2]->str, r->element[2]->len);
    }
}

/* rclient_on_ready: the last handshake reply (ROLE or PING) came back. */
static void rclient_on_ready(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rclient *rc = priv;
    const redisReply *r = reply;
    if (ac != rc->ac || rc->state != RC_HANDSHAKE) {
        return;
    }
    if (rclient_is_error(r)) {
        rclient_fail(rc, r != NULL ? r->str : "no answer");
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY) { /* ROLE */
        if (r->elements < 1 || r->element[0]->type != REDIS_REPLY_STRING ||
            strcmp(r->element[0]->str, "master") != 0) {
            rclient_fail(rc, "the server named by the sentinel is not a master (yet)");
            return;
        }
    }
    if (rc->channel != NULL) {
        const char *argv[2] = {"SUBSCRIBE", rc->channel};
        rc->state = RC_SUBSCRIBE;
        if (redisAsyncCommandArgv(ac, rclient_on_message, rc, 2, argv, NULL) != REDIS_OK) {
            rclient_fail(rc, "cannot send SUBSCRIBE");
        }
        return;
    }
    rc->state = RC_READY;
    uv_timer_stop(&rc->timer);
    rc->backoff_ms = RCLIENT_BACKOFF_FIRST_MS;
    if (rc->failures_logged > 0) {
        log_msg(LOG_NOTICE, "%s: connected again to %s:%d", rc->name, rc->host, rc->port);
    }
    rc->failures_logged = 0;
    rclient_set_up(rc, 1);
}

/* rclient_on_step: AUTH or SELECT during the handshake. */
static void rclient_on_step(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rclient *rc = priv;
    const redisReply *r = reply;
    if (ac != rc->ac || rc->state != RC_HANDSHAKE) {
        return;
    }
    if (rclient_is_error(r)) {
        rclient_fail(rc, r != NULL ? r->str : "no answer");
    }
}

static void rclient_handshake(struct rclient *rc, const char *host, int port)
{
    char db[16];
    rc->state = RC_HANDSHAKE;
    rc->ac = rclient_open(rc, host, port);
    if (rc->ac == NULL) {
        rclient_fail(rc, "cannot create a connection");
        return;
    }
    rclient_arm(rc, rc->cfg->connect_timeout_ms);
    /* hiredis queues these until the connection is up; they go out together */
    if (rc->cfg->password != NULL) {
        const char *argv[2] = {"AUTH", rc->cfg->password};
        redisAsyncCommandArgv(rc->ac, rclient_on_step, rc, 2, argv, NULL);
    }
    if (rc->cfg->db != 0) {
        snprintf(db, sizeof(db), "%u", rc->cfg->db);
        const char *argv[2] = {"SELECT", db};
        redisAsyncCommandArgv(rc->ac, rclient_on_step, rc, 2, argv, NULL);
    }
    const char *argv[1] = {rc->cfg->num_sentinels > 0 ? "ROLE" : "PING"};
    if (redisAsyncCommandArgv(rc->ac, rclient_on_ready, rc, 1, argv, NULL) != REDIS_OK) {
        rclient_fail(rc, "cannot send the handshake");
    }
}

static void rclient_on_sentinel_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rclient *rc = priv;
    const redisReply *r = reply;
    if (ac != rc->ac || rc->state != RC_SENTINEL) {
        return;
    }
    if (rclient_is_error(r)) {
        rclient_fail(rc, r != NULL && r->str != NULL ? r->str : "the sentinel refused AUTH");
    }
}

static void rclient_on_sentinel(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rclient *rc = priv;
    const redisReply *r = reply;
    char host[256];
    int port;
    if (ac != rc->ac || rc->state != RC_SENTINEL) {
        return;
    }
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        rclient_fail(rc, r->str); /* NOAUTH: the sentinel wants sentinel_password */
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= sizeof(host)) {
        rclient_fail(rc, r != NULL && r->type == REDIS_REPLY_NIL
                             ? "the sentinel does not know the master name"
                             : "no usable answer from the sentinel");
        return;
    }
    memcpy(host, r->element[0]->str, r->element[0]->len + 1);
    port = atoi(r->element[1]->str);
    /* done with this sentinel; the next attempt starts from the first again */
    rclient_drop(rc);
    rc->sentinel_idx = 0;
    if (port <= 0 || port > 65535) {
        rclient_fail(rc, "the sentinel named an invalid port");
        return;
    }
    log_msg(LOG_DEBUG, "%s: sentinel names master %s:%d", rc->name, host, port);
    rclient_handshake(rc, host, port);
}

static void rclient_connect(struct rclient *rc)
{
    if (rc->cfg->num_sentinels == 0) {
        rclient_handshake(rc, rc->cfg->host, rc->cfg->port);
        return;
    }
    const struct schema_host *s = &rc->cfg->sentinels[rc->sentinel_idx];
    rc->sentinel_idx = (rc->sentinel_idx + 1) % rc->cfg->num_sentinels;
    rc->state = RC_SENTINEL;
    rc->ac = rclient_open(rc, s->host, s->port);
    if (rc->ac == NULL) {
        rclient_fail(rc, "cannot create a connection to the sentinel");
        return;
    }
    rclient_arm(rc, rc->cfg->connect_timeout_ms);
    /* hiredis queues both until the connection is up; they go out together */
    if (rc->cfg->sentinel_password != NULL) {
        const char *auth[2] = {"AUTH", rc->cfg->sentinel_password};
        redisAsyncCommandArgv(rc->ac, rclient_on_sentinel_auth, rc, 2, auth, NULL);
    }
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", rc->cfg->master_name};
    if (redisAsyncCommandArgv(rc->ac, rclient_on_sentinel, rc, 3, argv, NULL) != REDIS_OK) {
        rclient_fail(rc, "cannot ask the sentinel");
    }
}

/* --- API ---------------------------------------------------------------------- */

struct rclient *rclient_new(uv_loop_t *loop, const struct config_redis *cfg, const char *channel,
                            const char *name, const struct rclient_ops *ops, void *ctx)
{
    struct rclient *rc = calloc(1, sizeof(*rc));
    if (rc == NULL) {
        return NULL;
    }
    rc->loop = loop;
    rc->cfg = cfg;
    rc->channel = channel;
    snprintf(rc->name, sizeof(rc->name), "%s", name);
    rc->ops = ops;
    rc->ctx = ctx;
    rc->backoff_ms = RCLIENT_BACKOFF_FIRST_MS;
    uv_timer_init(loop, &rc->timer);
    rc->timer.data = rc;
    metrics_redis_client(channel != NULL, 1);
    rclient_connect(rc);
    return rc;
}

int rclient_is_up(const struct rclient *rc)
{
    return rc != NULL && rc->state == RC_READY && rc->ac != NULL;
}

static void rclient_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rclient_req *req = priv;
    struct rclient *rc = req->rc;
    const redisReply *r = reply;
    int current = rc->ac != NULL && ac == rc->ac && req->ac == ac;

    if (current) {
        rc->inflight--;
        if (rc->inflight == 0) {
            uv_timer_stop(&rc->timer);
        } else {
            rclient_arm(rc, rc->cfg->command_timeout_ms); /* progress: time the next one */
        }
    }
    metrics_redis_command(uv_hrtime() - req->t0_ns, r != NULL);
    req->cb(req->ctx, r);
    free(req);
    if (current && r != NULL && r->type == REDIS_REPLY_ERROR &&
        strncmp(r->str, "READONLY", 8) == 0) {
        /* a failover turned our master into a replica */
        rclient_fail(rc, "the server became a replica");
    }
}

int rclient_cmd(struct rclient *rc, rclient_cb cb, void *ctx, int argc, const char **argv,
                const size_t *lens)
{
    if (!rclient_is_up(rc) || rc->channel != NULL) {
        return -1;
    }
    struct rclient_req *req = malloc(sizeof(*req));
    if (req == NULL) {
        return -1;
    }
    req->rc = rc;
    req->ac = rc->ac;
    req->cb = cb;
    req->ctx = ctx;
    req->t0_ns = uv_hrtime();
    if (redisAsyncCommandArgv(rc->ac, rclient_on_reply, req, argc, argv, lens) != REDIS_OK) {
        free(req);
        return -1;
    }
    if (rc->inflight++ == 0) {
        rclient_arm(rc, rc->cfg->command_timeout_ms);
    }
    return 0;
}

static void rclient_on_timer_close(uv_handle_t *h)
{
    free(h->data);
}

void rclient_close(struct rclient *rc)
{
    if (rc == NULL) {
        return;
    }
    rc->state = RC_CLOSED;
    metrics_redis_client(rc->channel != NULL, 0);
    rclient_drop(rc);
    uv_timer_stop(&rc->timer);
    uv_close((uv_handle_t *)&rc->timer, rclient_on_timer_close);
}
