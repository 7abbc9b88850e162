"""``python -m kubecrawl.cli``: the same command as the ``kubecrawl`` console script."""

from kubecrawl.cli import main

main()
