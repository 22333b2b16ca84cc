"""worker, demo, bench pipeline (placeholder until the lead lands it)."""


def register(sub, groups) -> None:
    return None
