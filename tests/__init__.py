"""seradv test suite (a package, so tests/helpers imports as tests.helpers)."""
