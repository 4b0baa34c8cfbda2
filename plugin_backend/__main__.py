"""``python -m plugin_backend`` is the ``plugin-backend`` command."""

from plugin_backend.cli import main

raise SystemExit(main())
