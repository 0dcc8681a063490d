//! Workload programs run inside the lab VM (BEAM-like pinned runtime, wake-up latency, hogs,
//! affinity churn). Empty until the outage-reproduction issue adds the first one; today the lab
//! uses stress-ng and shell pipelines from the host's packages.
