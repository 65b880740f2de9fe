"""Distributed studies: workers are real `python -m mnist_hpo` processes on the bundled smoke data.

The PostgreSQL server (the `postgres` and `pg_url` fixtures) is the session's throwaway cluster of
tests/conftest.py. Workers train with one CPU thread each.
"""

from __future__ import annotations
