"""kubesight tests: mirror the top-level folders; integration tests use the real broker."""
