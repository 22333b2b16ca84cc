"""The default inhibitions know the default rule pack's names for a node that is down or going away."""

import re

from alerts.inhibit import NODE_DOWN
from rules.load import DEFAULT_PACK, load_packs

NODE_GONE = ("KubeNodeNotReady", "CloudInstanceRebootScheduled", "CloudInstanceRedeployScheduled",
             "CloudSpotInterruption", "CloudInstanceFailure", "CloudInstanceStopped")


def test_node_down_sources_name_rules_of_the_default_pack():
    names = {r.alert for r in load_packs([DEFAULT_PACK]).rules}
    pattern = re.compile(f"(?:{NODE_DOWN})\\Z")
    for name in NODE_GONE:
        assert name in names, f"{name} is no longer a default rule: update NODE_DOWN"
        assert pattern.match(name), name
    assert not pattern.match("KubeNodeMemoryPressure")  # pressure does not mute the node's pods
