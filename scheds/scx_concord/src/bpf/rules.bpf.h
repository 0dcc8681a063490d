/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Rules: the operator's say per workload (the --config file's [[rule]] tables, src/rules.rs).
 * A rule matches tasks by thread name, process name, cgroup, effective uid / gid, nice and the
 * number of CPUs they may use; the first rule that matches a task gives it a class (latency:
 * a floor under its latency criticality and the right to preempt on wake-up; batch: no
 * criticality and no wake-up preemption), a longest turn, its own criticality floor and
 * may-preempt. Nothing a rule does reaches past the wait bound: criticality and turns move a
 * task within the capped offsets, and urgency still serves every task in time.
 *
 * A task is matched again whenever what rules look at changed since its last match: checked
 * at ops.runnable and ops.tick (a spinner that renamed itself never wakes up again, and alone
 * on its CPU it is not even queued again), at most every RULE_RECHECK_NS, against a signature of its name, process name's first bytes, cgroup,
 * credentials, nice and CPU count, so exec, a rename (ERTS names its threads after creating
 * them), a cgroup move, setuid or a new mask are seen within RULE_RECHECK_NS and a tick. Paths of cgroups are
 * user space's to match (cg_rule_bits, rescanned every second); when those marks change it
 * bumps rules_gen and every task is matched again.
 */
#ifndef __CONCORD_RULES_BPF_H
#define __CONCORD_RULES_BPF_H

#include "concord.bpf.h"

const volatile u32 nr_rules;

/* How often a task's facts are read again for its rule (rules_recheck()). */
#define RULE_RECHECK_NS		(100ULL * 1000 * 1000)
const volatile struct rule rules[MAX_RULES];

/* Bumped by user space when cg_rule_bits changed: every task is matched again. */
u64 rules_gen;

/* cgroup id -> the rules (bit i: rules[i]) whose cgroup matcher its path satisfies. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CGROUPS);
	__type(key, u64);
	__type(value, u32);
} cg_rule_bits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, u32);
	__type(value, struct rule_counters);
} rule_counters SEC(".maps");

/* What a task's rule match depends on, read once per check. */
struct rule_facts {
	char comm[RULE_COMM_LEN];
	char pcomm[RULE_COMM_LEN];
	u64 cgid;
	u32 uid, gid, nr_cpus;
	s32 nice;
};

static __always_inline bool name_matches(const char *have, const volatile u8 *want, u32 len,
					 u32 prefix)
{
	u32 i;

	if (!len)
		return true;
	for (i = 0; i < RULE_COMM_LEN; i++) {
		if (i >= len)
			return prefix || !have[i];
		if (have[i] != want[i])
			return false;
	}
	return true;
}

static __always_inline void read_facts(struct task_struct *p, struct rule_facts *f)
{
	struct task_struct *leader = BPF_CORE_READ(p, group_leader);

	__builtin_memcpy(f->comm, p->comm, RULE_COMM_LEN);
	if (!leader || BPF_CORE_READ_INTO(&f->pcomm, leader, comm))
		__builtin_memset(f->pcomm, 0, RULE_COMM_LEN);
	f->cgid = BPF_CORE_READ(p, cgroups, dfl_cgrp, kn, id);
	f->uid = BPF_CORE_READ(p, cred, euid.val);
	f->gid = BPF_CORE_READ(p, cred, egid.val);
	f->nr_cpus = p->nr_cpus_allowed;
	f->nice = (s32)p->static_prio - 120;
}

/* A signature of @f: a change in any fact changes it (but for a collision, 2^-64 or so). */
static __always_inline u64 facts_sig(const struct rule_facts *f)
{
	u64 c0, c1, p0, h;

	__builtin_memcpy(&c0, f->comm, 8);
	__builtin_memcpy(&c1, f->comm + 8, 8);
	__builtin_memcpy(&p0, f->pcomm, 8);
	h = c0 * 0x9e3779b97f4a7c15ULL;
	h = (h ^ c1) * 0xbf58476d1ce4e5b9ULL;
	h = (h ^ p0) * 0x94d049bb133111ebULL;
	h = (h ^ f->cgid) * 0x9e3779b97f4a7c15ULL;
	h ^= ((u64)f->uid << 32 | f->gid) * 0xbf58476d1ce4e5b9ULL;
	h ^= ((u64)f->nr_cpus << 32 | (u32)f->nice) * 0x94d049bb133111ebULL;
	return h | 1;
}

/* The first rule @f matches (its index + 1), 0 for none. */
static __always_inline u32 first_match(const struct rule_facts *f)
{
	u32 *bits = NULL, cg = 0, i;

	if (!nr_rules)
		return 0;
	bits = bpf_map_lookup_elem(&cg_rule_bits, &f->cgid);
	if (bits)
		cg = *bits;
	bpf_for(i, 0, MAX_RULES) {
		const volatile struct rule *r;

		if (i >= nr_rules)
			break;
		r = &rules[i];
		if (r->match_cgroup && !(cg & (1U << i)))
			continue;
		if (r->match_uid && f->uid != r->uid)
			continue;
		if (r->match_gid && f->gid != r->gid)
			continue;
		if (r->match_nice && (f->nice < r->nice_min || f->nice > r->nice_max))
			continue;
		if (r->match_nr_cpus && (f->nr_cpus < r->nr_cpus_min || f->nr_cpus > r->nr_cpus_max))
			continue;
		if (!name_matches(f->comm, r->comm, r->comm_len, r->comm_prefix))
			continue;
		if (!name_matches(f->pcomm, r->pcomm, r->pcomm_len, r->pcomm_prefix))
			continue;
		return i + 1;
	}
	return 0;
}

static __always_inline struct rule_counters *rule_counters_of(u32 rule)
{
	u32 idx = rule - 1;

	if (!rule || idx >= MAX_RULES)
		return NULL;
	return bpf_map_lookup_elem(&rule_counters, &idx);
}

/*
 * Match @p again if what rules look at changed: looked at most every RULE_RECHECK_NS per task
 * (at once when rules_gen moved). Reading the facts at every wake-up, queueing and tick doubled
 * the BPF time per callback of a BEAM's threads; names, cgroups and ids change seldom.
 */
static __always_inline void rules_recheck(struct task_struct *p, struct task_ctx *tctx, u64 now)
{
	struct rule_facts f;
	struct rule_counters *rc;
	u64 sig, gen;
	u32 rule;

	if (!nr_rules)
		return;
	gen = rules_gen;
	if (tctx->rule_sig && gen == tctx->rule_gen && tctx->rule_checked_at &&
	    !pol_waited_over(tctx->rule_checked_at, now, RULE_RECHECK_NS))
		return;
	tctx->rule_checked_at = now;
	read_facts(p, &f);
	sig = facts_sig(&f);
	if (sig == tctx->rule_sig && gen == tctx->rule_gen)
		return;
	tctx->rule_sig = sig;
	tctx->rule_gen = gen;
	rule = first_match(&f);
	if (rule != tctx->rule && (rc = rule_counters_of(rule)))
		rc->matched++;
	tctx->rule = rule;
}

static __always_inline const volatile struct rule *rule_of(const struct task_ctx *tctx)
{
	u32 idx = tctx->rule - 1;

	if (!tctx->rule || idx >= MAX_RULES || idx >= nr_rules)
		return NULL;
	return &rules[idx];
}

/* The task's latency criticality @lat_cri as its rule has it. */
static __always_inline u64 rule_lat_cri(const struct task_ctx *tctx, u64 lat_cri)
{
	const volatile struct rule *r = rule_of(tctx);
	u64 floor;

	if (!r)
		return lat_cri;
	if (r->class == RULE_CLASS_BATCH)
		return 1;
	floor = r->lat_cri_floor ?: (r->class == RULE_CLASS_LATENCY ? LAT_CRI_LATENCY : 0);
	return lat_cri < floor ? floor : lat_cri;
}

/* Whether the task's wake-ups may preempt a busy CPU, by its rule. */
static __always_inline bool rule_may_preempt(const struct task_ctx *tctx)
{
	const volatile struct rule *r = rule_of(tctx);

	if (!r || r->preempt == RULE_PREEMPT_YES)
		return true;
	if (r->preempt == RULE_PREEMPT_NO)
		return false;
	return r->class != RULE_CLASS_BATCH;
}

/*
 * Whether a yield of the task gives away one turn only (its rule's class is latency): an ERTS
 * scheduler of a latency-class BEAM spins with sched_yield() while it polls for work, and
 * queued behind every batch task due within a slice (yield_deadline()'s rule) it waited turn
 * after turn of CPU hogs with the work that had come for it.
 */
static __always_inline bool rule_yields_one_turn(const struct task_ctx *tctx)
{
	const volatile struct rule *r = rule_of(tctx);

	return r && r->class == RULE_CLASS_LATENCY;
}

/* Whether the task's rule puts it in the batch class. */
static __always_inline bool rule_is_batch(const struct task_ctx *tctx)
{
	const volatile struct rule *r = rule_of(tctx);

	return r && r->class == RULE_CLASS_BATCH;
}

/* The task's turn @turn, at most its rule's slice. */
static __always_inline u64 rule_turn(const struct task_ctx *tctx, u64 turn)
{
	const volatile struct rule *r = rule_of(tctx);

	if (!r || !r->slice_ns || turn <= r->slice_ns)
		return turn;
	return r->slice_ns;
}

/* A wait of @wait ns ended for a task of @tctx's rule. */
static __always_inline void rule_note_wait(const struct task_ctx *tctx, u64 wait)
{
	struct rule_counters *rc = rule_counters_of(tctx->rule);
	u64 b = pol_wait_bucket(wait);

	if (!rc)
		return;
	if (b < NR_WAIT_BUCKETS)
		rc->wait_hist[b]++;
	if (wait > rc->wait_max_ns)
		rc->wait_max_ns = wait;
}

/*
 * The task of @tctx ran until @now (its run ended, or a tick came): its rule's CPU time, from
 * where it was last counted. Ticks count too, or a task alone on its CPU, which never stops,
 * would never show up.
 */
static __always_inline void rule_note_run(struct task_ctx *tctx, u64 now)
{
	struct rule_counters *rc;
	u64 from = tctx->run_at;

	if (!tctx->rule || !from)
		return;
	if (tctx->rule_run_at && time_before(from, tctx->rule_run_at))
		from = tctx->rule_run_at;
	tctx->rule_run_at = now;
	if (time_before(from, now) && (rc = rule_counters_of(tctx->rule)))
		rc->run_ns += now - from;
}

#endif /* __CONCORD_RULES_BPF_H */
