"""``python -m medseg``: the ``medseg`` command line."""

from medseg.cli import main

if __name__ == "__main__":
    main()
