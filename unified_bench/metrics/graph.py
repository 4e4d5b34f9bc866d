"""Fused CPU inference graphs for backbone forwards (TorchScript + oneDNN Graph).

On a CPU nearly all of a scoring run is the backbone's forward pass, and eager PyTorch runs
each matmul and each elementwise step around it (bias, GELU, residual add, layer norm) as a
separate pass over memory. Tracing the forward once, freezing the weights into the graph and
letting oneDNN Graph fuse matmuls with their elementwise neighbours removes those passes:
``benchmarks/scoring_throughput.py`` measures the gain against the eager forward in the same
run.

The fused graph computes the same function; its results differ from eager only at float
rounding (tested to 1e-5 for every traceable metric). It is specialised to one input shape:
a batch of another shape (the last, partial batch of a run) runs eagerly, as does everything
when tracing fails (with a one-line note). Tracing reuses its own run's output for the first
batch, but tracing, freezing and the graph's first (profiling) call still cost about a batch's
time, so the engine turns it on for float32 on a CPU only when a metric has enough images to
repay that (:data:`FUSE_MIN_IMAGES`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

#: below this many images for one metric, building the graph (about a batch's time) is not repaid
FUSE_MIN_IMAGES = 64


def can_fuse(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a fused graph applies: float32 on a CPU, with TorchScript's oneDNN Graph pass
    in this torch build."""
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and hasattr(torch.jit, "enable_onednn_fusion")
        and torch.backends.mkldnn.is_available()
    )


@contextmanager
def onednn_fusion() -> Iterator[None]:
    """Enable oneDNN Graph fusion of TorchScript graphs, restoring the caller's setting."""
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


class _Traced(torch.nn.Module):
    """``pool(model(pixel_values=x))`` (or ``model(x)``) as one module, so tracing sees (and
    freezing folds) every weight."""

    def __init__(self, model: torch.nn.Module, pool: Callable[[object], torch.Tensor], keyword: str | None) -> None:
        super().__init__()
        self.model = model
        self._pool = pool
        self._keyword = keyword

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        output = self.model(**{self._keyword: pixels}) if self._keyword else self.model(pixels)
        return self._pool(output)


class FusedForward:
    """Run ``pool(model(pixel_values=x))`` through a frozen, oneDNN-fused TorchScript graph
    (``keyword=None``: ``pool(model(x))``).

    Built lazily from the first batch it is called with (the trace's example input); later
    batches of that exact shape use the graph, any other shape the eager module.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        pool: Callable[[object], torch.Tensor] = lambda output: output,
        *,
        keyword: str | None = "pixel_values",
        label: str = "backbone",
    ) -> None:
        self.eager = _Traced(model, pool, keyword).eval()
        self.label = label
        self.graph: torch.jit.ScriptModule | None = None
        self.shape: tuple[int, ...] | None = None
        #: why tracing was given up (None: not tried yet or succeeded)
        self.failure: str | None = None

    def _build(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """Trace on ``pixels``; returns the trace run's own output (the eager result for this
        batch, so tracing costs no extra forward), or None when tracing failed."""
        captured: list[torch.Tensor] = []
        handle = self.eager.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about python values the trace fixes
                traced = torch.jit.trace(self.eager, pixels, check_trace=False)
                self.graph = torch.jit.freeze(traced)
            self.shape = tuple(pixels.shape)
        except Exception as err:  # noqa: BLE001 - any tracing failure means: stay eager
            self.failure = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            warnings.warn(f"{self.label}: could not build a fused graph, running eagerly ({self.failure})", stacklevel=3)
            return None
        finally:
            handle.remove()
        return captured[0].detach() if captured else None

    @property
    def active(self) -> bool:
        return self.graph is not None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.failure is None:
            first = self._build(pixels)
            if first is not None:
                return first
        if self.graph is not None and tuple(pixels.shape) == self.shape:
            with torch.no_grad(), onednn_fusion():
                return self.graph(pixels)
        with torch.no_grad():
            return self.eager(pixels)
