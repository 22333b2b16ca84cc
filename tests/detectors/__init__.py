"""Tests for detectors/."""
