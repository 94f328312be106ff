"""Shared pytest settings."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: end-to-end run of the HEAR tools (tens of seconds); part of the default run and of CI",
    )
