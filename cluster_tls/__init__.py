"""TLS between the parts of a Starling cluster: one settings block, shared by all of them.

The peer (``peer.config``), the scheduler (``scheduler.service.config``) and ``p2pctl``
read the same ``tls:`` block (``cert_file``, ``key_file``, ``ca_file``) and build their
``ssl.SSLContext`` objects here, so the rules (what is checked, which names are verified)
are written once. A library: it imports nothing of the daemons.
"""

from cluster_tls.settings import (
    ENV_CA_FILE,
    ENV_CERT_FILE,
    ENV_KEY_FILE,
    TLSConfigError,
    TLSSettings,
    client_context,
    describe_failure,
    load_tls,
    with_scheme,
)

__all__ = [
    "ENV_CA_FILE",
    "ENV_CERT_FILE",
    "ENV_KEY_FILE",
    "TLSConfigError",
    "TLSSettings",
    "client_context",
    "describe_failure",
    "load_tls",
    "with_scheme",
]
