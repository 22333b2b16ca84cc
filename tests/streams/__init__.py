"""Tests for streams/."""
