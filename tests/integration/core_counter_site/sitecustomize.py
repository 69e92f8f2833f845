"""Loads the CountingCore measurement tool (``tests/integration/core_counter.py``) into a
gateway process started with ``counting_env``: on ``PYTHONPATH`` only there."""

from tests.integration.core_counter import install_from_env

install_from_env()
