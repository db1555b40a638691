"""gochat's benchmarks.

The scripts beside this file (``wheel.py``, ``db.py``, ``chaos.py``) run as files
(``python bench/db.py``); the load generator runs as a module (``python -m bench``,
:mod:`bench.load`). Results are written down under ``bench/results/``.
"""
