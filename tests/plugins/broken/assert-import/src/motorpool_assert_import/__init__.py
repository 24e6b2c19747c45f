"""A plugin whose import fails an assert: stevedore's guard re-raises AssertionError."""

assert False, "motorpool-assert-import fails an assert at import on purpose"  # noqa: B011, PT015, S101
