"""Distributed studies: real worker processes on a real PostgreSQL server, a journal file, the gRPC proxy.

The server is the session's throwaway cluster (the `postgres` and `pg_url` fixtures of tests/conftest.py):
Debian's PostgreSQL, initdb + pg_ctl on a free 127.0.0.1 port, password authentication, which .ci/run
installs with apt when it is missing. Without it these tests are skipped locally and fail in CI.

Workers are real `python -m mnist_hpo` processes on the bundled smoke data, one CPU thread each.
"""
