/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Weights: what a task weighs when it competes for a CPU, its nice weight scaled by its
 * cgroups' cpu.weight shares (--cgroup-weights hierarchical).
 *
 * The kernel's fair class shares CPU level by level: at each cgroup, the runnable tasks
 * directly in it (by nice weight) and its child cgroups that have runnable tasks below them
 * (by cpu.weight) split its part in proportion. A task's part of the machine, its hierarchical
 * weight, is the product of those fractions from its cgroup to the root. Concord keeps one
 * deadline order per queue rather than a tree of queues (a pinned task must stay in its CPU's
 * queue, and the wait bound must see every task), so the hierarchy acts through the weight
 * every deadline, turn and vtime is computed with: a task weighs its hierarchical weight times
 * the nice weights of all runnable tasks. Tasks then share CPU as their hierarchical weights
 * do, and the weights average nice 0's, so the rest of the policy (offsets, turns, the heaviest
 * task about) sees the numbers it sees without cgroups. With every task in the root cgroup a
 * task weighs its nice weight, exactly.
 *
 * Nothing is counted while the root is the only cgroup with the cpu controller (cg_nr_nodes).
 * Each cgroup's node holds the weights of its active entities (wsum) and how many they are;
 * an entity joins when it becomes runnable (a task) or gets its first runnable descendant (a
 * cgroup), and a cgroup that becomes active or idle joins or leaves its parent's sum with the
 * weight it joined with (contrib), under each node's lock in turn, never two at once.
 * Transitions racing between levels can leave a parent's sum off while they pass, never after.
 * Shares are over the whole machine, not per LLC, as the kernel's hierarchical shares are.
 */
#ifndef __CONCORD_WEIGHTS_BPF_H
#define __CONCORD_WEIGHTS_BPF_H

#include "concord.bpf.h"

const volatile u32 cgroup_weights = CGROUP_WEIGHTS_HIERARCHICAL;

struct cg_node {
	struct bpf_spin_lock lock;
	u64 parent;		/* the parent cgroup's id; 0 for the root */
	u64 weight;		/* cpu.weight */
	u64 contrib;		/* the weight it added to its parent's wsum when it became active */
	s64 wsum;		/* weights of its active entities: runnable tasks in it, active children */
	s64 nr_active;		/* how many entities those are */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CGROUPS);
	__type(key, u64);
	__type(value, struct cg_node);
} cg_nodes SEC(".maps");

/* Nice weights of all charged runnable tasks, and how many of those are outside the root. */
s64 cg_task_wsum;
s64 cg_nr_outside_root;
/*
 * cgroups other than the root with a node. While there is none every task weighs its nice
 * weight and nothing is counted: a lock and two shared counters at every wake-up and sleep of
 * every task cost the lab's erlang mix a tenth of its token ring's hops.
 */
s64 cg_nr_nodes;
u64 cg_root_id;
/* cgroups that got no node (the map was full): their tasks weigh as if in their parent */
u64 cg_untracked;

static inline u64 cgroup_id_of(struct cgroup *cgrp)
{
	return cgrp ? BPF_CORE_READ(cgrp, kn, id) : 0;
}

/*
 * An entity of weight @w (a task's nice weight, or a child cgroup's contrib) becomes active in
 * cgroup @cgid (@w > 0) or stops being active there (@w < 0, the weight it joined with). A node
 * whose entity count leaves or reaches zero joins or leaves its parent in turn.
 */
static inline void cg_charge(u64 cgid, s64 w)
{
	u32 i;

	bpf_for(i, 0, CG_MAX_DEPTH) {
		struct cg_node *n = bpf_map_lookup_elem(&cg_nodes, &cgid);
		bool edge;
		s64 up;

		if (!n)
			return;
		bpf_spin_lock(&n->lock);
		n->wsum += w;
		if (w > 0) {
			edge = n->nr_active++ == 0;
			if (edge)
				n->contrib = n->weight;
			up = n->contrib;
		} else {
			edge = --n->nr_active == 0;
			up = -(s64)n->contrib;
		}
		cgid = n->parent;
		bpf_spin_unlock(&n->lock);
		if (!edge || !cgid)
			return;
		w = up;
	}
}

/* @cgid's share among its siblings changed by @delta while it was active. */
static inline void cg_add_weight(u64 cgid, s64 delta)
{
	struct cg_node *n = bpf_map_lookup_elem(&cg_nodes, &cgid);

	if (!n)
		return;
	bpf_spin_lock(&n->lock);
	n->wsum += delta;
	bpf_spin_unlock(&n->lock);
}

/* @p became runnable: it joins its cgroup's active entities with its nice weight. */
static inline void weight_on_runnable(struct task_struct *p, struct task_ctx *tctx)
{
	u64 w = pol_clamp(p->scx.weight, 1, 10000);

	if (cgroup_weights != CGROUP_WEIGHTS_HIERARCHICAL || !tctx->cgid || cg_nr_nodes <= 0)
		return;
	tctx->charged_cgid = tctx->cgid;
	tctx->charged_w = w;
	cg_charge(tctx->cgid, w);
	__sync_fetch_and_add(&cg_task_wsum, w);
	if (tctx->cgid != cg_root_id)
		__sync_fetch_and_add(&cg_nr_outside_root, 1);
}

/* @p is no longer runnable: it leaves where it joined, with what it joined with. */
static inline void weight_on_quiescent(struct task_ctx *tctx)
{
	u64 cgid = tctx->charged_cgid;
	s64 w = tctx->charged_w;

	if (!cgid)
		return;
	tctx->charged_cgid = 0;
	cg_charge(cgid, -w);
	__sync_fetch_and_sub(&cg_task_wsum, w);
	if (cgid != cg_root_id)
		__sync_fetch_and_sub(&cg_nr_outside_root, 1);
}

/*
 * What @p weighs now: its nice weight when cgroups do not matter (off, not charged, or every
 * runnable task in the root), else its hierarchical weight times the nice weights of all
 * runnable tasks (see the top of this file), between 1 and 10000 as task weights are.
 */
static inline u64 weight_now(struct task_struct *p, struct task_ctx *tctx)
{
	u64 w = pol_clamp(p->scx.weight, 1, 10000), cgid, hw;
	struct cg_node *n;
	s64 total;
	u32 i;

	/*
	 * Counted in a cgroup it has left (a move that did not pass through ops.quiescent and
	 * ops.runnable with the new cgroup known), or with a nice weight it no longer has: count
	 * it again, or a hog that never sleeps would weigh as where it was for good.
	 */
	if (tctx->charged_cgid &&
	    (tctx->charged_cgid != tctx->cgid || tctx->charged_w != w)) {
		weight_on_quiescent(tctx);
		weight_on_runnable(p, tctx);
	} else if (!tctx->charged_cgid && cg_nr_nodes > 0) {
		/* runnable since before the first cgroup came: counted from now */
		weight_on_runnable(p, tctx);
	}
	cgid = tctx->charged_cgid;
	if (!cgid || cg_nr_outside_root <= 0)
		return w;
	n = bpf_map_lookup_elem(&cg_nodes, &cgid);
	if (!n)
		return w;
	hw = pol_share(1ULL << CG_SHARE_SHIFT, tctx->charged_w, n->wsum > 0 ? n->wsum : 0);
	bpf_for(i, 0, CG_MAX_DEPTH) {
		u64 contrib = n->contrib, parent = n->parent;

		if (!parent)
			break;
		n = bpf_map_lookup_elem(&cg_nodes, &parent);
		if (!n)
			break;
		hw = pol_share(hw, contrib, n->wsum > 0 ? n->wsum : 0);
	}
	total = cg_task_wsum;
	return pol_cgroup_weight(hw, total > 0 ? total : w);
}

/* The weight the rest of the policy computes with for @p (weight_now() as of its last queueing). */
static inline u64 weight_of(const struct task_struct *p, const struct task_ctx *tctx)
{
	return tctx && tctx->weight ? tctx->weight : pol_clamp(p->scx.weight, 1, 10000);
}

#endif /* __CONCORD_WEIGHTS_BPF_H */
