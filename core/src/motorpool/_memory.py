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
            f"{model_id} needs about {gib(needed)}, more than the whole budget of {gib(budget)}",
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
        held = [e.id for e in others if isinstance(e.state, Ready | Loading)]
        raise MemoryBudgetExceeded(
            f"{model_id} needs about {gib(needed)}; {gib(used)} of {gib(budget)} is held by "
            f"models that are pinned, busy or loading ({', '.join(held)})",
            hint="unload or unpin a model, wait for requests to finish, "
            "or raise MOTORPOOL_MEMORY_BUDGET / MOTORPOOL_MAX_LOADED_MODELS",
        )
    return victims


def gib(size: int) -> str:
    """Bytes as GiB for messages."""
    return f"{size / 2**30:.2f} GiB"
