"""One module per top-level `hwlat` command; each has `register(subparsers)`."""
