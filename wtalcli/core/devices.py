"""Device selection: turn a user's ``--device`` string into a ``torch.device`` (or a clear error),
and say what a device computes with (:func:`machine_numerics`)."""

from __future__ import annotations

import os

import torch

from wtalcli.core.errors import InputError, WtalError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> the first GPU when CUDA works, else the CPU; ``"cpu"``; ``"cuda"`` or ``"cuda:N"``.

    Asking for CUDA on a machine without a working CUDA build/driver raises :class:`WtalError`
    instead of failing later inside the first kernel launch.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise InputError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            reason = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None and torch.version.cuda is not None:
                reason += f" (CUDA_VISIBLE_DEVICES={visible!r})"
            raise WtalError(
                f"--device {name} asked for a GPU but {reason}", "use --device cpu or --device auto"
            )
        index = int(index_text)
        count = torch.cuda.device_count()
        if index >= count:
            raise WtalError(
                f"--device {name}: only {count} GPU(s) visible", f"use cuda:0 .. cuda:{count - 1}"
            )
        return torch.device("cuda", index)
    raise InputError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N")


def machine_numerics(device: torch.device) -> dict:
    """What fixes a run's floating-point results besides its seed: torch's version, the device, and
    on CPU the kernel instruction set torch dispatched to (after ``ATEN_CPU_CAPABILITY`` and
    ``ONEDNN_MAX_CPU_ISA``, which cap it) and the intra-op thread count; recorded in the manifest so
    two runs of one seed that differ can be told apart."""
    out: dict = {"torch": torch.__version__, "device": device.type}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["threads"] = torch.get_num_threads()
        cap = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)}
        if cap:
            out["isa_caps"] = cap
    return out
