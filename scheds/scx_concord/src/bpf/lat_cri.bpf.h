/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Latency criticality: measured from wake-ups. ops.runnable sees every wake-up: the woken task's
 * wake frequency and the waker's (current task's) waker frequency are decayed rates.
 */
#ifndef __CONCORD_LAT_CRI_H
#define __CONCORD_LAT_CRI_H
#include "concord.bpf.h"

static inline void lat_cri_on_wakeup(struct task_struct *p, struct task_ctx *tctx, u64 now)
{
	struct task_struct *waker = bpf_get_current_task_btf();
	struct task_ctx *wctx;

	if (tctx->last_wake_at)
		tctx->wake_freq = pol_freq_update(tctx->wake_freq, now - tctx->last_wake_at);
	tctx->last_wake_at = now;

	/* Wake-ups from interrupts or the idle task carry no task-to-task signal. */
	if (!waker || waker->pid == 0 || waker == p || (waker->flags & PF_KTHREAD))
		return;
	wctx = task_ctx(waker);
	if (!wctx)
		return;
	if (wctx->last_waker_at)
		wctx->waker_freq = pol_freq_update(wctx->waker_freq, now - wctx->last_waker_at);
	wctx->last_waker_at = now;
}

/* Fold a finished run into the task's average runtime. */
static inline void lat_cri_on_stop(struct task_ctx *tctx, u64 now)
{
	if (tctx->run_at && !time_before(now, tctx->run_at))
		tctx->avg_runtime = pol_runtime_update(tctx->avg_runtime, now - tctx->run_at);
}

/*
 * The task's deadline: now plus a bounded, history-free offset of at most half the wait bound.
 * Real time, not a virtual clock: a task queued at t is overtaken only by tasks queued before
 * t + max_wait/2, so deadline order alone already bounds waits; the overdue path is the net.
 */
static inline u64 task_deadline(struct task_struct *p, struct task_ctx *tctx, u64 now)
{
	tctx->lat_cri = pol_lat_cri(tctx->wake_freq, tctx->waker_freq);
	return now + pol_deadline_delta(tctx->avg_runtime, p->scx.weight, tctx->lat_cri,
					slice_min_ns, slice_max_ns, delta_cap_ns());
}
#endif
