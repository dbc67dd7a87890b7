"""Fixtures of the `bastion check` tests: provider keys in the env and a local alert receiver."""

from tests.check._check_fixtures import hooks, provider_keys

__all__ = ["hooks", "provider_keys"]
