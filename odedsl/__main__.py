"""``python -m odedsl``: the same command line as the ``odedsl`` console script, for
environments where the script is not on ``PATH`` (a venv used without activating it)."""

from odedsl.cli.main import entry

if __name__ == "__main__":
    entry()
