"""Real-component test fixtures: registry, token server, counting proxy, containerd, skopeo.

Every helper here starts a real process or a real aiohttp server on 127.0.0.1 and an
ephemeral port; nothing is mocked. The modules import no pytest so that the benchmark can
reuse them (for example ``images.push_image``) outside a test run.
"""
