"""Profiling on a Ray cluster: driver, local cluster, workers."""
