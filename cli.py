"""Shim so that ``python cli.py ...`` works from a checkout (the installed command is ``pramloc``)."""

from pramloc.cli import main

if __name__ == "__main__":
    main()
