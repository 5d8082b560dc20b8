"""The opt-in fast path: a MODEL whose network runs compiled, with static shapes.

It goes through the host's own torch.compile wrapper (what its TorchCompileModel node installs), so
our GDF samplers and the host's KSampler both run the compiled network, and a later node that
clones the MODEL keeps it. Shapes are static (dynamic=False): changing the seed, the prompt's
words or cfg (other than to or from 1, which halves the batch) recompiles nothing, and each new
latent size, batch or prompt length (77 tokens per chunk) costs one compile, kept for reuse.
"""
import logging

import torch

from comfy.patcher_extension import WrappersMP
from comfy_api.latest import io
from comfy_api.torch_helpers.torch_compile import COMPILE_KEY, set_torch_compile_wrapper

from .host_models import cascade_stage_of

MODES = ["compile", "cuda graphs", "off"]
DEFAULT_BACKEND = "inductor"
# torch.compile's mode per choice; "cuda graphs" falls back to "compile" off CUDA.
TORCH_COMPILE_MODES = {"compile": None, "cuda graphs": "reduce-overhead"}


def apply_fast_path(model, mode, backend=DEFAULT_BACKEND):
    """A clone of the host MODEL `model` with the fast path `mode` ("compile", "cuda graphs", "off").

    `backend` is torch.compile's backend: inductor for users; tests and CPU smoke runs pass a cheap
    one ("aot_eager", or a callable that records the graphs it is handed). Returns (clone, note):
    note says what was applied, in words (e.g. the CPU fallback of "cuda graphs").
    """
    if mode not in MODES:
        raise ValueError(f"fast path mode {mode!r}: expected one of {MODES}")
    patched = model.clone()
    if mode == "off":
        patched.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY)
        patched.model_options.pop("torch_compile_kwargs", None)
        return patched, "off: the eager network (any earlier torch.compile wrapper removed)"
    compile_mode = TORCH_COMPILE_MODES[mode]
    note = f"{mode}: torch.compile(backend={_backend_name(backend)}, dynamic=False)"
    if compile_mode == "reduce-overhead":
        device = torch.device(patched.load_device)
        if device.type != "cuda":
            compile_mode = None
            note = (f"cuda graphs need a CUDA device, this MODEL runs on '{device.type}': "
                    f"fell back to plain compile, torch.compile(backend={_backend_name(backend)}, dynamic=False)")
        else:
            note += ", mode='reduce-overhead' (CUDA graphs)"
    set_torch_compile_wrapper(patched, backend=backend, mode=compile_mode, dynamic=False)
    return patched, note


def _backend_name(backend):
    return backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)


class FastPath(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_FastPath",
            display_name="Stable Cascade Fast Path",
            category="stable_cascade/sampling",
            description=(
                "Opt-in speed-up: returns a copy of the Stage C or Stage B model whose network is compiled "
                "(torch.compile, static shapes) through the host's own compile wrapper, so the GDF samplers and "
                "KSampler both use it. The first run at a new size compiles (slow, once); the result equals the "
                "eager path within rounding. Leave it out for the exact eager path."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Stage C or Stage B model (from our loaders or the host's UNETLoader)."),
                io.Combo.Input("mode", options=MODES, default="compile",
                               tooltip="compile: torch.compile with inductor. cuda graphs: also replays the whole step as "
                                       "one CUDA graph (CUDA only; elsewhere it falls back to compile). off: the eager "
                                       "network, removing any earlier compile."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="A copy of the model with the fast path applied.")],
        )

    @classmethod
    def execute(cls, model, mode):
        if cascade_stage_of(model) is None:
            raise ValueError("Stable Cascade Fast Path: the 'model' input is not a Stable Cascade Stage B or C model")
        patched, note = apply_fast_path(model, mode)
        logging.info("Stable Cascade Fast Path: %s", note)
        return io.NodeOutput(patched)


NODES = [FastPath]
