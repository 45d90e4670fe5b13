"""``python -m modelarts_exporter``: the same as the ``modelarts-exporter`` command."""

from .cli import main

raise SystemExit(main())
