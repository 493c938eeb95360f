"""The NAS side: the Pub/Sub listener that turns clip requests into flow runs.

The runs themselves are executed by Prefect process workers polling the ``nas-pool`` work
pool (``prefect worker start --pool nas-pool --name nas-server-01``), one per NAS host.
"""
