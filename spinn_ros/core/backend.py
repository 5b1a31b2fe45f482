"""Inference backends of the staged executor: which engine runs the stages and exit heads.

``run_head`` / ``run_tail`` (progressive.py) only call a model's ``run_stage`` and
``run_exit`` and read its geometry; the exit policy, the decoding of exit outputs, the
codec and the batching stay in torch whatever the backend. So a backend is a model
object with those two methods:

``torch``        the :class:`~spinn_ros.core.model.EarlyExitNet` itself (eager PyTorch)
``onnxruntime``  :class:`OrtStagedModel`: one onnxruntime session per stage and exit
                 head (the files of ``spinn export``, exported on first use into the
                 cache when missing), geometry from the torch model

onnxruntime is imported only when that backend is chosen: the torch path works without it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

BACKENDS = ("torch", "onnxruntime")
DEFAULT_BACKEND = "torch"
#: tried in this order; the ones this onnxruntime build lacks are skipped (and named once in the log)
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class BackendError(ValueError):
    """A backend that cannot run here: the message says what is missing and how to get it."""


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def choose_providers(available: Sequence[str], wanted: Sequence[str] = PROVIDERS) -> tuple[list[str], list[str]]:
    """(the wanted providers this build has, in order; the wanted ones it lacks)."""
    return [p for p in wanted if p in available], [p for p in wanted if p not in available]


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime; on a "
                         "Jetson the GPU build from JetPack's index: scripts/jetson_setup.sh)") from exc
    return onnxruntime


def _provider_options(provider: str, onnx_dir: Path) -> dict:
    if provider == "TensorrtExecutionProvider":       # engines take minutes to build: keep them beside the files
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(onnx_dir / "trt")}
    return {}


class OrtStagedModel:
    """A model whose stages and exit heads run in onnxruntime; everything else is the torch model's.

    Inputs and outputs stay torch CPU tensors (shared memory with numpy, no copy), so
    the executor, the policy and the codec do not know which backend ran.
    """

    #: torch compute that must not be reached through this object (it would silently bypass the backend)
    _TORCH_ONLY = frozenset({"stages", "exits", "forward"})

    def __init__(self, model, model_id: str, *, threads: int = 1, providers: Sequence[str] = PROVIDERS,
                 onnx_dir=None, log: Callable[[str], None] = print):
        from .onnx_export import ensure_exported

        ort = _import_onnxruntime()
        self._model = model
        self.backend = "onnxruntime"
        self.onnx_dir, manifest = ensure_exported(model, model_id, onnx_dir, log)
        self.providers, missing = choose_providers(ort.get_available_providers(), providers)
        if not self.providers:
            raise BackendError(f"onnxruntime {ort.__version__} has none of the providers {', '.join(providers)}")
        log(f"onnxruntime {ort.__version__}: running on {', '.join(self.providers)}"
            + (f"; not in this build: {', '.join(missing)}" if missing else ""))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads        # as torch_threads: the drone leaves the other cores to ROS
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        chosen = [(p, _provider_options(p, self.onnx_dir)) for p in self.providers]
        session = lambda entry: ort.InferenceSession(str(self.onnx_dir / entry["file"]), options, providers=chosen)
        self._stages = [session(e) for e in manifest["stages"]]
        self._exits = [session(e) for e in manifest["exits"]]
        self._io = (manifest["input"], manifest["output"])

    def __getattr__(self, name: str):
        if name in self._TORCH_ONLY or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} has no {name!r} (torch compute is not part of this backend)")
        return getattr(self._model, name)

    @property
    def torch_model(self):
        return self._model

    def _run(self, session, x):
        import numpy as np
        import torch

        out = session.run([self._io[1]], {self._io[0]: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)

    def run_stage(self, stage: int, x):
        return self._run(self._stages[stage], x)

    def run_exit(self, exit_index: int, activation):
        return self._run(self._exits[exit_index], activation)


def staged_model(model, model_id: str, backend: str, *, threads: int = 1, onnx_dir=None,
                 log: Callable[[str], None] = print):
    """The model as ``backend`` runs it: the torch model itself, or an :class:`OrtStagedModel`."""
    if check_backend(backend) == "torch":
        return model
    try:
        return OrtStagedModel(model, model_id, threads=threads, onnx_dir=onnx_dir, log=log)
    except BackendError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:     # export or session creation (onnxruntime's are RuntimeError)
        raise BackendError(f"backend 'onnxruntime': {exc}") from exc


def backend_of(model) -> str:
    return getattr(model, "backend", None) or DEFAULT_BACKEND
