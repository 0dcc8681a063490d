/* SPDX-License-Identifier: GPL-2.0 */
/* Wait accounting: from being queued to starting to run, per queue kind. */
#ifndef __CONCORD_STATS_H
#define __CONCORD_STATS_H
#include "concord.bpf.h"

static inline void record_wait(struct task_ctx *tctx, u64 now)
{
	u64 wait, b, old;
	u32 kind = tctx->enq_kind;

	if (!tctx->enq_at || kind >= NR_QUEUE_KINDS)
		return;
	wait = time_before(tctx->enq_at, now) ? now - tctx->enq_at : 0;
	tctx->enq_at = 0;
	b = pol_wait_bucket(wait);
	if (b < NR_WAIT_BUCKETS)
		__sync_fetch_and_add(&wait_hist[kind][b], 1);
	old = wait_max_ns[kind];
	/* a lost race here can only under-report by one concurrent sample; retried once */
	if (wait > old && __sync_val_compare_and_swap(&wait_max_ns[kind], old, wait) != old) {
		old = wait_max_ns[kind];
		if (wait > old)
			__sync_val_compare_and_swap(&wait_max_ns[kind], old, wait);
	}
}
#endif
