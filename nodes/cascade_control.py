"""A Stable Cascade ControlNet as the host's CONTROL_NET, and its residuals for either sampler.

`CascadeControlNet` is a `comfy.controlnet.ControlBase`: the host's KSampler loads its ModelPatcher
together with Stage C (get_models) and asks it for residuals every step (get_control). Our GDF sampler
instead computes the residuals of every ControlNet attached to a prompt once per run and hands them to
Stage C as one more condition (`control_schedules`). Cascade ControlNets loaded by the host's own
ControlNetLoader (a T2IAdapter around comfy.ldm.cascade's ControlNet) work in our sampler too.
"""
import comfy.controlnet
import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import torch

from ..controlnet.checkpoint import ControlNetSpec, controlnet_spec
from ..controlnet.module import ControlNet
from ..controlnet.schedule import ControlSchedule, noise_condition_range
from .conditioning import to_batch

KIND_NAMES = {"canny": "canny", "inpainting": "inpainting/outpainting", "super_resolution": "super-resolution",
              "identity": "face identity"}
# How the control input relates to the Stage C latent grid: effnet ControlNets see the image at 32 pixels
# per latent cell (bilinear, as the host resizes), the others take inputs on the latent grid itself.
COMPRESSION = {"effnet": 32, "large": 1, "simple": 1}
RESIZE_MODE = {"effnet": "bilinear", "large": "nearest-exact", "simple": "nearest-exact"}


class CascadeControlNet(comfy.controlnet.ControlBase):
    def __init__(self, patcher, spec: ControlNetSpec, source_name):
        super().__init__()
        self.patcher = patcher
        self.spec = spec
        self.source_name = source_name
        self.compression_ratio = COMPRESSION[spec.bottleneck]
        self.upscale_algorithm = RESIZE_MODE[spec.bottleneck]
        self._residuals = None  # cached for one sampling run, keyed by the latent shape
        self._residuals_key = None

    def describe(self):
        return f"{self.source_name} ({KIND_NAMES[self.spec.kind]} ControlNet)"

    def copy(self):
        other = CascadeControlNet(self.patcher, self.spec, self.source_name)
        self.copy_to(other)
        return other

    def get_models(self):
        return super().get_models() + [self.patcher]

    def pre_run(self, model, percent_to_timestep_function):
        check_fits_stage_c(self, model.diffusion_model)
        super().pre_run(model, percent_to_timestep_function)

    def cleanup(self):
        self._residuals = self._residuals_key = None
        super().cleanup()

    def residuals(self, latent_shape, batched_number, dtype):
        """The ControlNet's list of residuals for a latent batch [N,16,h,w] (unscaled), computed once."""
        key = (tuple(latent_shape), batched_number, dtype)
        if self._residuals_key != key:
            hint = network_input(self, latent_shape[-2:])
            hint = comfy.controlnet.broadcast_image_to(hint, latent_shape[0], batched_number)
            self._residuals = _run(self.patcher, hint, dtype)
            self._residuals_key = key
        return self._residuals

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        previous = None
        if self.previous_controlnet is not None:
            previous = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return previous
        residuals = self.residuals(x_noisy.shape, batched_number, x_noisy.dtype)
        # The host hands Stage C the list reversed (consumed from its end); control_merge scales in place.
        control = {"input": [None if r is None else r.clone() for r in reversed(residuals)]}
        return self.control_merge(control, previous, x_noisy.dtype)


def _run(patcher, hint, dtype):
    network = patcher.model
    # Ours computes in the input's dtype (manual_cast layers); the host's own module needs its weights' dtype.
    weights_dtype = next(network.parameters()).dtype
    input_dtype = dtype if isinstance(network, ControlNet) else weights_dtype
    with torch.no_grad():
        residuals = network(hint.to(patcher.load_device, input_dtype))
    if isinstance(residuals, dict):  # the host's module: {"input": the list reversed}
        residuals = residuals["input"][::-1]
    return [None if r is None else r.to(dtype) for r in residuals]


def network_input(control, latent_size):
    """The control hint resized to what the ControlNet sees for a Stage C latent of `latent_size` (h, w)."""
    hint = control.cond_hint_original
    ratio = control.compression_ratio
    height, width = latent_size[0] * ratio, latent_size[1] * ratio
    hint = comfy.utils.common_upscale(hint.float(), width, height, control.upscale_algorithm, "center")
    c_in = control.spec.c_in
    if hint.shape[1] != c_in:
        if c_in == 1 and hint.shape[1] == 3:
            hint = hint.mean(dim=1, keepdim=True)  # as the host does for 1-channel adapters
        elif c_in == 3 and hint.shape[1] == 1:
            hint = hint.expand(-1, 3, -1, -1)
        else:
            raise ValueError(f"{control.describe()} takes {c_in}-channel input but was given {hint.shape[1]} channels")
    return hint


def check_fits_stage_c(control, stage_c_network):
    width = stage_c_network.embedding[1].out_channels
    if control.spec.c_proj != width:
        made_for = "the 3.6B Stage C" if control.spec.c_proj == 2048 else f"a Stage C {control.spec.c_proj} channels wide"
        raise ValueError(
            f"{control.describe()} was made for {made_for}, but this Stage C is {width} channels wide"
            f"{' (the 1B lite model)' if width == 1536 else ''}: use the Stage C it was trained with")


def as_cascade_control(control_net, input_name="control_net"):
    """Ours as it is; the host's T2IAdapter around a cascade ControlNet re-wrapped; anything else refused."""
    if isinstance(control_net, CascadeControlNet):
        return control_net
    model = getattr(control_net, "t2i_model", None)
    if model is not None and type(model).__module__ == "comfy.ldm.cascade.controlnet":
        # One wrapper per host object, so a ControlNet on both prompts stays one ControlNet.
        if getattr(control_net, "_scpack_control", None) is None:
            control_net._scpack_control = _from_host_adapter(control_net)
        return control_net._scpack_control
    raise ValueError(
        f"'{input_name}' is a {type(control_net).__name__}, not a Stable Cascade ControlNet: load a Stable Cascade "
        "ControlNet (canny, inpainting, super_resolution) with 'Load ControlNet (Stable Cascade)'")


def _from_host_adapter(adapter):
    spec = controlnet_spec(adapter.t2i_model.state_dict(), "ControlNet from the host's loader")
    patcher = comfy.model_patcher.ModelPatcher(adapter.t2i_model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    control = CascadeControlNet(patcher, spec, "ControlNet from the host's loader")
    adapter.copy_to(control)
    control.compression_ratio, control.upscale_algorithm = COMPRESSION[spec.bottleneck], RESIZE_MODE[spec.bottleneck]
    control.previous_controlnet = adapter.previous_controlnet
    return control


def control_chain(extras, input_name):
    """The cascade ControlNets attached to one prompt (the host chains them through previous_controlnet)."""
    chain = []
    control = extras.get("control")
    while control is not None:
        chain.append(as_cascade_control(control, f"the ControlNet on '{input_name}'"))
        control = control.previous_controlnet
    return chain


def control_models(chains):
    """The ModelPatchers to load with Stage C, each once."""
    patchers = []
    for chain in chains:
        for control in chain:
            if all(control.patcher is not known for known in patchers):
                patchers.append(control.patcher)
    return patchers


def control_schedules(chains, stage_c_network, latent_shape, shift, dtype):
    """One ControlSchedule per prompt; a ControlNet attached to both prompts is computed once and shared."""
    entries = {}
    schedules = []
    for chain in chains:
        schedule_entries = []
        for control in chain:
            check_fits_stage_c(control, stage_c_network)
            key = (control.patcher, id(control.cond_hint_original), control.strength, control.timestep_percent_range)
            if key not in entries:
                batch_shape = (latent_shape[0], *latent_shape[1:])
                residuals = control.residuals(batch_shape, 1, dtype)
                residuals = [None if r is None else to_batch(r, latent_shape[0], control.describe()) * control.strength
                             for r in residuals]
                entries[key] = (residuals, *noise_condition_range(*control.timestep_percent_range, shift))
                control.cleanup()
            schedule_entries.append(entries[key])
        schedules.append(ControlSchedule(schedule_entries, latent_shape[0]))
    return schedules
