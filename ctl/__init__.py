"""``p2pctl``: operator commands for a Starling cluster."""
