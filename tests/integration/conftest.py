"""Fixtures shared by the integration tests that need their own servers."""

import pytest

from tests.faults.deps import PrivateRedis


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of the test's own (a restart empties it; the shared one is never
    touched)."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()
