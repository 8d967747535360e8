"""The studio's generator forward pass on CPU in ONNX Runtime: the loaded torch generator exported once (in memory,
about 0.3 s for the ``cpu`` preset's network at 256²), checked against the torch forward on a probe input, and
wrapped as a ``torch.nn.Module`` so that the studio's stills and :func:`deep_puppets.gan.inference.generate` (the
keyframed export) call it exactly as they call the torch generator.

Why: on 2 CPU cores ONNX Runtime runs the 256² U-Net in about 60 ms where torch's eager forward takes 110–130 ms
(benchmarks/studio.py), the largest part of one slider update. The session uses ``intra_op_num_threads`` =
the torch thread count, one inter-op thread, all graph optimizations and no spinning of idle threads (their
busy-waiting after a run slowed the renders and encoding of the same update by ~25 ms); the batch axis is dynamic (the export
generates 8 frames at a time when no previous outputs are fed back).

:func:`onnx_forward` returns the wrapper, or None (with one log line saying why) when ONNX Runtime is missing, the
export fails, or the exported forward differs from torch's by more than :data:`ONNX_TOLERANCE`: the caller then keeps
torch. Imports no training code.
"""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np
import torch

__all__ = ["BACKENDS", "OnnxGenerator", "ONNX_TOLERANCE", "onnx_forward"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")  # auto: ONNX Runtime on CPU when its check passes, else torch
ONNX_TOLERANCE = 1e-4  # max abs difference to the torch forward on the probe input (outputs in [-1, 1])


class OnnxGenerator(torch.nn.Module):
    """An ONNX Runtime session standing in for a generator: ``forward`` takes and returns CPU float32 tensors
    ``(B, C, H, W)``. ``export_s``: the export's seconds; ``max_abs_diff``: the probe check's difference."""

    def __init__(self, session, export_s: float = 0.0, max_abs_diff: float = float("nan")):
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.export_s = export_s
        self.max_abs_diff = max_abs_diff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def export_session(G: torch.nn.Module, probe: torch.Tensor, threads: int):
    """``G`` exported to ONNX in memory (opset 17, batch axis dynamic) and opened in an ONNX Runtime CPU session
    with ``threads`` intra-op threads."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():  # tracer warnings about shape checks: the input size is fixed per generator
        warnings.simplefilter("ignore")
        torch.onnx.export(G, probe, buf, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})  # fmt: skip
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    # no busy-waiting after a run: the renders, stacking and encoding that follow need the same 2 cores (25 ms per update)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


def onnx_forward(G: torch.nn.Module, in_channels: int, size: tuple[int, int], threads: int | None = None, name: str = "generator"):
    """``G`` (torch, CPU, eval) as an :class:`OnnxGenerator` checked on a seeded random probe ``(1, in_channels,
    *size)`` in [-1, 1]; None with one log line (naming ``name``) when it cannot be used."""
    threads = torch.get_num_threads() if threads is None else threads
    probe = torch.rand((1, in_channels, *size), generator=torch.Generator().manual_seed(0)) * 2 - 1
    t0 = time.perf_counter()
    try:
        session = export_session(G, probe, threads)
    except Exception as e:  # any failure of the optional backend: torch
        log.warning("studio: %s runs in torch: the ONNX export or session failed (%s: %s)", name, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return None
    export_s = time.perf_counter() - t0
    net = OnnxGenerator(session, export_s)
    with torch.inference_mode():
        want = G(probe)
        got = net(probe)
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    net.max_abs_diff = diff
    if not diff <= ONNX_TOLERANCE:
        log.warning("studio: %s runs in torch: the ONNX forward differs from torch's by %.3g on the probe input (> %g)", name, diff, ONNX_TOLERANCE)
        return None
    log.info("studio: %s runs in ONNX Runtime (%d threads; exported in %.2f s; max abs diff to torch %.2g)", name, threads, export_s, diff)
    return net
