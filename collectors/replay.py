"""Replay of recorded real signals (placeholder until the lead lands it)."""


def register(sub, groups) -> None:
    return None
