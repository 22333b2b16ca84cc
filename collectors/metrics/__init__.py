"""Prometheus metrics in: scrape of text/OpenMetrics pages, remote-write intake, Kubernetes discovery."""
