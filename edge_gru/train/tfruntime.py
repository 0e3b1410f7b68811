"""TensorFlow and Keras, imported in one place: a clear message when missing, quiet logs when present.

Every module of :mod:`edge_gru.train` gets TensorFlow and Keras from :func:`tensorflow` and
:func:`keras`, so a device install without the ``train`` extra hears which extra to install
(:class:`~edge_gru.errors.MissingExtraError`) instead of a traceback, and the C++ log level
is set before TensorFlow is first imported (it is read once, at import).

TensorFlow also prints to file descriptor 2 from C++ before its logging is initialised (the
oneDNN notice, CUDA probing on machines without a GPU, the TFLite converter's settings, the
XNNPACK delegate): no environment variable silences those. :func:`quiet_tensorflow` sends
descriptor 2 to a temporary file for the duration of a command and keeps Python's own
stderr (progress lines, warnings of edge-gru, tracebacks) on the real one; what TensorFlow
printed is shown only when the command fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from edge_gru.errors import EdgeGruError
from edge_gru.extras import require_extra

#: The C++ log level set (unless already set) before TensorFlow is imported: errors only.
TF_CPP_MIN_LOG_LEVEL = "2"
_NOISY_MODULES = r"(tensorflow|keras|absl|tf_keras|ai_edge_litert)(\.|$)"


def _prepare(what: str) -> None:
    require_extra("train", what)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_CPP_MIN_LOG_LEVEL)


def tensorflow(what: str = "training") -> Any:
    """The ``tensorflow`` module; ``what`` names the feature in the missing-extra message."""
    _prepare(what)
    import tensorflow as tf

    return tf


def keras(what: str = "training") -> Any:
    """The ``keras`` module (Keras 3 on TensorFlow)."""
    _prepare(what)
    import keras as keras_module

    return keras_module


@contextlib.contextmanager
def quiet_tensorflow(verbose: bool = False) -> Iterator[None]:
    """Keep TensorFlow's native and Python log output off stderr (unless ``verbose``) while the body runs.

    When TensorFlow itself fails (any exception but an :class:`~edge_gru.errors.EdgeGruError`),
    the captured native output is written to stderr after all, before the traceback, since it
    may say why.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_CPP_MIN_LOG_LEVEL)
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        stderr_is_fd2 = sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        stderr_is_fd2 = False  # e.g. a test runner's in-memory stream: only descriptor 2 needs redirecting
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", module=_NOISY_MODULES)
        sys.stderr.flush()
        saved = os.dup(2)
        sink = stack.enter_context(tempfile.TemporaryFile())
        os.dup2(sink.fileno(), 2)
        old_stderr = sys.stderr
        moved: list[logging.StreamHandler[Any]] = []
        real = None
        if stderr_is_fd2:
            encoding = getattr(old_stderr, "encoding", None) or "utf-8"
            real = stack.enter_context(open(os.dup(saved), "w", buffering=1, encoding=encoding))
            sys.stderr = real
            loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values())]
            for lg in loggers:
                for h in getattr(lg, "handlers", []):
                    if isinstance(h, logging.StreamHandler) and h.stream is old_stderr:
                        h.setStream(real)
                        moved.append(h)
        failed = True
        try:
            yield
            failed = False
        except EdgeGruError:
            failed = False  # bad input, said in edge-gru's own words: TensorFlow's chatter adds nothing
            raise
        finally:
            if real is not None:
                real.flush()
            for h in moved:
                h.setStream(old_stderr)
            sys.stderr = old_stderr
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                captured = sink.read().decode("utf-8", "replace")
                if captured:
                    sys.stderr.write(f"--- TensorFlow's log output ---\n{captured}--- end ---\n")
                    sys.stderr.flush()
