"""The worker (``vine_worker``): connects to a manager, caches files, runs tasks.

Modules: ``main`` (command line, connect / reconnect loop), ``session`` (one manager
connection: message handlers and the event loop), ``cache`` (the cache directory and its
metadata), ``sandbox`` (task directories: stage in, stage out), ``process`` (spawning and
killing task processes), ``resources`` (detection and the ledger of what is committed).
"""
