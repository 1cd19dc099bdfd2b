"""Helpers shared by the test suite: PostgreSQL databases, gRPC calls, direct SQL."""
