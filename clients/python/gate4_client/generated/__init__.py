"""Modules generated from the package's own sources; never edited by hand.

client.py is aio.py unasynced (clients/python/generate_sync.py, `make client`); a drift test
fails when the two part.
"""
