"""Collectors: host (psutil), probes (HTTP, TCP, SQL), files (log directory growth)."""
