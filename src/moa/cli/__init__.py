"""The ``moa`` command line."""
