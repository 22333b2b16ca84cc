"""Tests for alerts/."""
