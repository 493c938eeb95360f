"""The local stack: every part of the service on loopback, one command away.

    python -m stack up      # start Prefect server, emulators, workers, listener, proxy
    python -m stack demo    # request a clip through the proxy and download it
    python -m stack down    # stop every process the stack started
    python -m stack status  # what is running

Ports and paths come from ``CLIPPING_STACK_*`` variables (see ``stack.config``).
"""
