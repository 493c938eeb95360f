"""The service's contract, shared by every layer: settings, wire messages, NAS confinement.

The proxy, the Pub/Sub listener, the `clip-hand` flow and its notification all import the
request and completion models from here, so a field is defined exactly once.
"""
