"""The pluggy markers. ``hookimpl`` is what plugins decorate their functions with."""

import pluggy

PROJECT_NAME = "motorpool"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
