"""``python -m moa``: the same command line as ``moa``."""

from moa.cli.main import main

if __name__ == "__main__":
    main()
