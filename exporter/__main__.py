"""``python -m exporter``: the same as the ``modelarts-exporter`` command."""

from exporter.cli import main

raise SystemExit(main())
