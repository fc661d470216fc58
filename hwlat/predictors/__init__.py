"""Latency predictors: metrics, baselines, few-shot transfer to unseen devices (low-rank,
proxy, HELP-style), save/load, and pretrained transfer predictors (`hwlat.predictors.pretrained`)."""
