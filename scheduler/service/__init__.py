"""``p2p-scheduler``: the HTTP shell around ``scheduler.core``.

One asyncio task (``writer.StateWriter``) owns the ``SchedulerState`` and applies every
change in order; request handlers (``api``) parse JSON into core events (``wire``), hand
the writer an operation and wait for its result. The shell reads the clock, owns the one
``random.Random``, counts metrics and writes logs; the core decides.

Modules: ``config`` (settings), ``fields`` and ``wire`` (JSON in and out), ``writer``
(the one writer), ``api`` (routes), ``auth`` (cluster token), ``metrics``, ``openapi``
(the API document), ``app`` (assembling and running the server), ``cli``.
"""
