"""Where this process stands in a launched job (``torchrun``'s ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``),
read from the environment without importing torch, so the command line can check it cheaply;
:mod:`wtalcli.core.distributed` does everything that needs ``torch.distributed``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from wtalcli.core.errors import InputError


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> Dist:
    """The ranks a launcher gave this process (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``), or one process."""
    if "WORLD_SIZE" not in os.environ:
        return Dist()
    values = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        text = os.environ.get(name)
        if text is None or not text.strip().isdigit():
            raise InputError(
                f"WORLD_SIZE is set but {name}={text!r} is not a rank number",
                "launch with torchrun, or unset WORLD_SIZE for a single-process run",
            )
        values[name] = int(text)
    world, rank, local = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world < 1 or rank >= world:
        raise InputError(
            f"RANK={rank} does not fit WORLD_SIZE={world}", "launch with torchrun, or unset WORLD_SIZE"
        )
    return Dist(rank, world, local)
