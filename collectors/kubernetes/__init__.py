"""Kubernetes collector: lossless list+watch of Events and Node/Pod state changes, resolved to owners."""
