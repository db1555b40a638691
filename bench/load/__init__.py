"""The load generator behind ``python -m bench``.

A parent process (:mod:`bench.load.cli`) starts the servers (or targets a
running gateway), registers users, and spreads the connections over client
worker processes (:mod:`bench.load.worker`), which speak the chat protocol with
the ``websockets`` library, an implementation independent of the server's
Autobahn. The parent joins what the workers saw, checks the database, and
writes the figures (:mod:`bench.load.stats`, :mod:`bench.load.report`).

Scenarios live in :mod:`bench.load.scenarios`; a new one (a group fan-out)
is one more entry there.
"""
