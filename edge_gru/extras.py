"""Optional extras: what each needs and the one check every feature that uses one goes through.

A device install (``pip install 'edge-gru[device]'``) has no TensorFlow and no matplotlib;
a desktop may lack paho-mqtt. Whatever is missing, the user gets one line naming the extra
(:class:`~edge_gru.errors.MissingExtraError`) rather than a traceback.
"""

from __future__ import annotations

import importlib.util

from edge_gru.errors import MissingExtraError

#: The modules each extra of ``pyproject.toml`` provides (what :func:`require_extra` checks).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("tensorflow", "keras"),
    "plot": ("matplotlib",),
    "device": ("numba", "paho"),
    "tflite": ("ai_edge_litert",),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (cheap even for TensorFlow)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
        return False


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` unless every one of its modules is installed.

    ``what`` names the feature in the message (``"edge-gru train"``, ``"--plot"``); ``modules``
    narrows the check (``serve`` needs paho-mqtt from the device extra, not numba).
    """
    for module in modules if modules is not None else EXTRA_MODULES[extra]:
        if not installed(module):
            raise MissingExtraError(what, extra, module=module)
