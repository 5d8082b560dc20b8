"""Loader nodes: files in the host's model folders -> the host's MODEL and VAE types."""
from comfy_api.latest import io

from . import host_models
from .choices import choice_problems
from .file_kinds import ordered_choices
from .input_checks import WrongInput
from .model_files import filenames, full_path, load_network

CATEGORY = "stable_cascade/loaders"
STAGE_C_DTYPES = ["default", "fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e5m2"]
STAGE_B_DTYPES = ["default", "fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e5m2"]
UNET_FOLDERS = ("diffusion_models", "checkpoints")  # separate UNet files, or ComfyUI's bundled checkpoints
VAE_FOLDERS = ("vae", "checkpoints")


class DiffusionModelLoader(io.ComfyNode):
    """What the Stage C and Stage B loaders share; each subclass names its stage and its texts."""

    STAGE = NODE_ID = DISPLAY_NAME = DESCRIPTION = FILE_TOOLTIP = DTYPE_TOOLTIP = None
    DTYPES = []

    @classmethod
    def file_inputs(cls):
        return {"unet_name": (UNET_FOLDERS, f"stage_{cls.STAGE}")}

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=CATEGORY,
            description=cls.DESCRIPTION,
            inputs=[
                io.Combo.Input("unet_name", options=ordered_choices(filenames(*UNET_FOLDERS), UNET_FOLDERS, f"stage_{cls.STAGE}"),
                               tooltip=cls.FILE_TOOLTIP),
                io.Combo.Input("weight_dtype", options=cls.DTYPES, default="default", tooltip=cls.DTYPE_TOOLTIP),
            ],
            outputs=[io.Model.Output(display_name=f"stage_{cls.STAGE}", tooltip=f"Stage {cls.STAGE.upper()} model (host MODEL).")],
        )

    @classmethod
    def validate_inputs(cls, unet_name):
        # One input only: the host files a returned message under every input named here. weight_dtype
        # is a fixed list the editor cannot get wrong; execute checks it for API prompts.
        return choice_problems(unet_name=(unet_name, filenames(*UNET_FOLDERS)))

    @classmethod
    def execute(cls, unet_name, weight_dtype="default"):
        problem = choice_problems(weight_dtype=(weight_dtype, cls.DTYPES))
        if problem is not True:
            raise WrongInput(f"{cls.DISPLAY_NAME}: {problem}")
        network_sd, config = load_network(unet_name, UNET_FOLDERS, f"stage_{cls.STAGE}")
        model = host_models.build_diffusion_model(cls.STAGE, network_sd, config, host_models.WEIGHT_DTYPES[weight_dtype],
                                                  source_path=full_path(unet_name, *UNET_FOLDERS))
        return io.NodeOutput(model)


class StageCLoader(DiffusionModelLoader):
    STAGE = "c"
    NODE_ID = "SCPack_StageCLoader"
    DISPLAY_NAME = "Load Stage C Prior (Stable Cascade)"
    DESCRIPTION = (
        "Loads a Stable Cascade Stage C (the text-conditional prior, 3.6B or 1B lite) from models/diffusion_models "
        "or a bundled checkpoint from models/checkpoints. Original, ComfyUI-bundled and diffusers layouts, bf16 or fp32 files. "
        "The MODEL also works in the host's KSampler."
    )
    FILE_TOOLTIP = "Stage C file, e.g. stage_c_bf16.safetensors, stage_c_lite_bf16.safetensors or stable_cascade_stage_c.safetensors."
    DTYPES = STAGE_C_DTYPES
    DTYPE_TOOLTIP = (
        "How the weights are stored in memory. 'default' lets ComfyUI choose: bf16 where the GPU has it, else fp16 "
        "(half the memory of fp32). Plain fp16 overflows in Stage C; here it runs with its hidden states rescaled by "
        "factors computed from this file at load (once, on the CPU, then cached), which gives the same result within "
        "fp16 rounding. The fp8 choices compute in bf16/fp16/fp32."
    )


class StageBLoader(DiffusionModelLoader):
    STAGE = "b"
    NODE_ID = "SCPack_StageBLoader"
    DISPLAY_NAME = "Load Stage B Decoder (Stable Cascade)"
    DESCRIPTION = (
        "Loads a Stable Cascade Stage B (expands the Stage C latent into a Stage A latent; 1.5B or 700M lite) from "
        "models/diffusion_models or a bundled checkpoint from models/checkpoints. The MODEL also works in the host's KSampler."
    )
    FILE_TOOLTIP = "Stage B file, e.g. stage_b_bf16.safetensors, stage_b_lite_bf16.safetensors or stable_cascade_stage_b.safetensors."
    DTYPES = STAGE_B_DTYPES
    DTYPE_TOOLTIP = "How the weights are stored in memory. 'default' lets ComfyUI choose (Stage B may compute in fp16, bf16 or fp32)."


class StageALoader(io.ComfyNode):
    @classmethod
    def file_inputs(cls):
        return {"vae_name": (VAE_FOLDERS, "stage_a")}

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_StageALoader",
            display_name="Load Stage A VAE (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Loads Stable Cascade Stage A, the VQGAN that turns Stage B latents into pixels (and back), from models/vae or a "
                "bundled Stage B checkpoint. Outputs the host's VAE type, so VAEDecode/VAEEncode accept it too."
            ),
            inputs=[
                io.Combo.Input(
                    "vae_name",
                    options=ordered_choices(filenames(*VAE_FOLDERS), VAE_FOLDERS, "stage_a"),
                    tooltip="stage_a.safetensors, or stable_cascade_stage_b.safetensors (its bundled Stage A).",
                ),
            ],
            outputs=[io.Vae.Output(display_name="stage_a", tooltip="Stage A as a host VAE (4-channel latent at 1/4 resolution).")],
        )

    @classmethod
    def validate_inputs(cls, vae_name):
        return choice_problems(vae_name=(vae_name, filenames(*VAE_FOLDERS)))

    @classmethod
    def execute(cls, vae_name):
        network_sd, config = load_network(vae_name, VAE_FOLDERS, "stage_a")
        return io.NodeOutput(host_models.build_stage_a_vae(network_sd, config))


NO_FILE = "none"


class StageCCoderLoader(io.ComfyNode):
    @classmethod
    def file_inputs(cls):
        return {"encoder_name": (VAE_FOLDERS, "effnet"), "previewer_name": (VAE_FOLDERS, "previewer")}

    @classmethod
    def define_schema(cls):
        files = filenames(*VAE_FOLDERS)
        return io.Schema(
            node_id="SCPack_StageCCoderLoader",
            display_name="Load Stage C VAE (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Loads the Stage C 'VAE': the EfficientNet encoder (image -> 16-channel Stage C latent, for image-to-image) and "
                "the Previewer (Stage C latent -> small RGB preview, also used for live previews while Stage C samples). "
                "From separate files in models/vae, or both from a bundled Stage C checkpoint. Outputs the host's VAE type."
            ),
            inputs=[
                io.Combo.Input(
                    "encoder_name",
                    options=[NO_FILE] + ordered_choices(files, VAE_FOLDERS, "effnet"),
                    default=NO_FILE,
                    tooltip="effnet_encoder.safetensors, or a bundled stable_cascade_stage_c.safetensors; 'none' for a preview-only VAE.",
                ),
                io.Combo.Input(
                    "previewer_name",
                    options=[NO_FILE] + ordered_choices(files, VAE_FOLDERS, "previewer"),
                    default=NO_FILE,
                    tooltip="previewer.safetensors, or a bundled stable_cascade_stage_c.safetensors; 'none' for an encode-only VAE.",
                ),
            ],
            outputs=[io.Vae.Output(display_name="stage_c_vae", tooltip="EfficientNet encoder + Previewer as a host VAE.")],
        )

    @classmethod
    def validate_inputs(cls, encoder_name, previewer_name):
        if encoder_name == NO_FILE and previewer_name == NO_FILE:
            return "choose an encoder file, a previewer file, or both"
        options = [NO_FILE] + filenames(*VAE_FOLDERS)
        return choice_problems(encoder_name=(encoder_name, options), previewer_name=(previewer_name, options))

    @classmethod
    def execute(cls, encoder_name, previewer_name):
        encoder = None if encoder_name == NO_FILE else load_network(encoder_name, VAE_FOLDERS, "effnet")
        previewer = None if previewer_name == NO_FILE else load_network(previewer_name, VAE_FOLDERS, "previewer")
        return io.NodeOutput(host_models.build_stage_c_coder_vae(encoder, previewer))


NODES = [StageCLoader, StageBLoader, StageALoader, StageCCoderLoader]
