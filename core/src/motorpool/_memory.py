"""The memory budget: which idle models to evict (least recently used first) for a load."""

from __future__ import annotations

from collections.abc import Sequence

from motorpool._states import Loading, ModelEntry, Ready
from motorpool.errors import MemoryBudgetExceeded


def plan_room(
    model_id: str,
    others: Sequence[ModelEntry],
    needed: int,
    budget: int,
    max_models: int | None,
) -> list[ModelEntry]:
    """The models to evict so that ``needed`` more bytes (and one more model) fit.

    Only ready, unpinned, unused models are candidates, oldest use first. Raises
    :class:`MemoryBudgetExceeded` when even evicting all of them is not enough.
    """
    if needed > budget:
        raise MemoryBudgetExceeded(
            f"{model_id} needs about {size(needed)}, more than the whole budget of {size(budget)}",
            hint="raise MOTORPOOL_MEMORY_BUDGET or choose a smaller model or quantisation",
        )
    used = sum(e.memory for e in others)
    count = sum(isinstance(e.state, Loading | Ready) for e in others)

    def fits() -> bool:
        return used + needed <= budget and (max_models is None or count < max_models)

    victims: list[ModelEntry] = []
    for candidate in sorted((e for e in others if e.evictable()), key=lambda e: e.last_used):
        if fits():
            break
        victims.append(candidate)
        used -= candidate.memory
        count -= 1
    if not fits():
        held = [f"{e.id} ({_why_held(e)})" for e in others if e.memory and e not in victims]
        raise MemoryBudgetExceeded(
            f"{model_id} needs about {size(needed)}; {size(used)} of {size(budget)} is held by "
            f"models that cannot be evicted now: {', '.join(held) or 'none'}",
            hint="unload or unpin a model, wait for requests to finish, "
            "or raise MOTORPOOL_MEMORY_BUDGET / MOTORPOOL_MAX_LOADED_MODELS",
        )
    return victims


def _why_held(entry: ModelEntry) -> str:
    match entry.state:
        case Ready() if entry.pinned:
            return "pinned"
        case Ready():
            return "in use"
        case state:
            return type(state).__name__.lower()


def size(count: int) -> str:
    """Bytes for messages: 512 B, 1.5 KiB, 3.2 GiB."""
    if count < 1024:  # noqa: PLR2004 - one KiB
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:  # noqa: PLR2004
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
