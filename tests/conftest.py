"""Project-wide test setup: ``pytester`` for the tests of meshlib's pytest plugin."""

pytest_plugins = ("pytester",)
