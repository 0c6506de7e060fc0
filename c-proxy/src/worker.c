#include "worker.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- conns */

void worker_conn_add(struct worker *w, struct worker_conn *wc, const struct worker_conn_ops *ops)
{
    wc->ops = ops;
    list_add(&wc->link, &w->conns);
    w->n_conns++;
}

void worker_conn_bury(struct worker *w, struct worker_conn *wc)
{
    list_del(&wc->link);
    list_add_tail(&wc->link, &w->graveyard);
    w->n_conns--;
    if (w->hooks && w->hooks->on_conn_gone)
        w->hooks->on_conn_gone(w);
}

void worker_graveyard_add(struct worker *w, struct worker_conn *wc,
                          const struct worker_conn_ops *ops)
{
    wc->ops = ops;
    list_add_tail(&wc->link, &w->graveyard);
}

void worker_reap(struct worker *w)
{
    /* freeing one object may bury another (a client's last upstream conn): loop */
    while (!list_empty(&w->graveyard)) {
        struct worker_conn *wc = list_first_entry(&w->graveyard, struct worker_conn, link);
        list_del(&wc->link);
        wc->ops->free(wc);
    }
}

static void worker_abort_all(struct worker *w)
{
    while (!list_empty(&w->conns)) {
        struct worker_conn *wc = list_first_entry(&w->conns, struct worker_conn, link);
        wc->ops->abort(wc); /* buries it: it leaves the list */
    }
}

/* ---------------------------------------------------------------- drain */

static void worker_on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    worker_abort_all(container_of(t, struct worker, drain_timer));
}

static void worker_begin_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    if (w->hooks && w->hooks->on_drain)
        w->hooks->on_drain(w); /* no accept; idle upstream conns close now */
    struct list_head *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->conns)
    {
        struct worker_conn *wc = list_entry(pos, struct worker_conn, link);
        wc->ops->shutdown(wc);
    }
    double s = (double)w->cfg->cfg->timeouts.shutdown_ms / 1000.0;
    ev_timer_set(&w->drain_timer, s, 0);
    ev_timer_start(w->loop, &w->drain_timer);
}

/* ---------------------------------------------------------------- main -> worker */

static void worker_take_config(struct worker *w)
{
    struct cfgref *cfg = atomic_exchange(&w->pending_cfg, NULL);
    if (!cfg)
        return;
    if (!w->draining && w->hooks && w->hooks->on_config)
        w->hooks->on_config(w, cfg);
    cfgref_release(cfg);
}

static void worker_on_async(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, async);
    worker_take_config(w);
    if (atomic_load(&w->stop_requested))
        worker_begin_drain(w);
    if (atomic_load(&w->abort_requested))
        worker_abort_all(w); /* the reaper then sees no connection and ends the loop */
}

void worker_post_config(struct worker *w, struct cfgref *cfg)
{
    struct cfgref *old = atomic_exchange(&w->pending_cfg, cfg);
    cfgref_release(old);
    ev_async_send(w->loop, &w->async);
}

void worker_post_stop(struct worker *w)
{
    atomic_store(&w->stop_requested, true);
    ev_async_send(w->loop, &w->async);
}

void worker_post_abort(struct worker *w)
{
    atomic_store(&w->stop_requested, true);
    atomic_store(&w->abort_requested, true);
    ev_async_send(w->loop, &w->async);
}

/* ---------------------------------------------------------------- lifecycle */

static void worker_on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    struct worker *w = container_of(p, struct worker, reaper);
    worker_reap(w);
    log_flush(w->alog);
    if (w->draining && w->n_conns == 0 &&
        (!w->hooks || !w->hooks->may_end || w->hooks->may_end(w))) {
        ev_timer_stop(loop, &w->drain_timer);
        ev_break(loop, EVBREAK_ALL);
    }
}

int worker_init(struct worker *w, unsigned id, struct ev_loop *loop,
                const struct worker_hooks *hooks)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->hooks = hooks;
    list_init(&w->conns);
    list_init(&w->graveyard);
    w->loop = loop ? loop : ev_loop_new(EVFLAG_AUTO);
    if (!w->loop)
        return -1;
    w->alog = calloc(1, sizeof *w->alog);
    if (!w->alog)
        return -1;
    atomic_init(&w->pending_cfg, NULL);
    atomic_init(&w->stop_requested, false);
    atomic_init(&w->abort_requested, false);
    util_rng_seed(&w->rng);
    ev_timer_init(&w->drain_timer, worker_on_drain_timeout, 0, 0);
    ev_async_init(&w->async, worker_on_async);
    ev_prepare_init(&w->reaper, worker_on_prepare);
    ev_async_start(w->loop, &w->async);
    ev_prepare_start(w->loop, &w->reaper);
    return 0;
}

static void *worker_thread(void *arg)
{
    worker_run(arg);
    return NULL;
}

int worker_spawn(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_thread, w) == 0 ? 0 : -1;
}

void worker_run(struct worker *w)
{
    ev_run(w->loop, 0);
    /* drained: free what is left (the reaper may not have run after the last close) */
    worker_on_prepare(w->loop, &w->reaper, 0);
    if (w->hooks && w->hooks->on_end)
        w->hooks->on_end(w);
}

void worker_join_and_deinit(struct worker *w)
{
    if (w->id > 0)
        pthread_join(w->thread, NULL);
    worker_abort_all(w);
    worker_reap(w);
    if (w->hooks && w->hooks->on_deinit)
        w->hooks->on_deinit(w); /* releases the set: its idle conns are buried */
    worker_reap(w);
    cfgref_release(atomic_exchange(&w->pending_cfg, NULL));
    ev_timer_stop(w->loop, &w->drain_timer);
    ev_async_stop(w->loop, &w->async);
    ev_prepare_stop(w->loop, &w->reaper);
    if (w->alog)
        log_flush(w->alog);
    free(w->alog);
    w->alog = NULL;
    buffer_pool_drain(&w->pool_out);
    buffer_pool_drain(&w->pool_uin);
    buffer_pool_drain(&w->pool_uout);
    if (!ev_is_default_loop(w->loop))
        ev_loop_destroy(w->loop);
}
