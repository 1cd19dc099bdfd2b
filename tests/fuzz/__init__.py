"""Fuzzing the Platform API against its OpenAPI document with schemathesis."""
