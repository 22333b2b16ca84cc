"""Tests for collectors/."""
