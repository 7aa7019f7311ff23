"""The ``resvision`` command line: thin wrappers over functions a test can import."""
