"""OCI Distribution side of Starling: path and digest parsing, upstream access, the mirror app.

A library: the peer daemon mounts :func:`registry_proxy.mirror.create_mirror_app` and plugs
its own blob handler in. Parsing modules (``reference``, ``ranges``, ``errors``) are sans-IO.
"""
