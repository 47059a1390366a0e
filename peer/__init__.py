"""The Starling peer daemon: registry mirror, piece engine, blob cache."""
