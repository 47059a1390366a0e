"""Starling scheduler: tells each peer which parents to download pieces from."""
