"""Tests for rules/."""
