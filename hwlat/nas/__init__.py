"""Use latency predictions in NAS: search spaces, constraints, adapters and reference searches."""
