"""One record per kind of file a user may pick: how it is named, and which loader takes it.

A new kind (a ControlNet, a LoRA, a CLIP vision model of this pack) is one entry in FILE_KINDS.
The loaders' display names are quoted in error messages; tests/test_file_kinds.py ties each one to
the schema of the node it names (this pack's, or the host's), so a renamed node cannot leave a
message pointing at a name the user will not find.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Loader:
    """A node that loads a kind of file, as messages quote it."""
    node_id: str  # the node's id: SCPack_* of this pack, or the host's own
    display_name: str  # the node's display name, exactly as its schema gives it
    host: bool = False  # a node of the host, not of this pack


@dataclass(frozen=True)
class FileKind:
    kind: str  # what identify() answers
    description: str | None = None  # what the file is: "Stage A VQGAN", "Stable Cascade ControlNet"
    network_name: str | None = None  # the network, in "it holds no ___"
    wanted_file: str | None = None  # what its loader asks for: "... but the Stage C loader needs ___"
    loader_name: str | None = None  # "the ___ needs ..."
    loaders: tuple = ()  # the nodes that take it: "Load it with ___ instead."
    loader_detail: str = ""  # after the node names: an input name, a type to pick, a note

    def taken_by(self):
        """"'Load Stage C Prior (Stable Cascade)'", "the host's 'Load CLIP' node with type 'stable_cascade'", or None."""
        if not self.loaders:
            return None
        names = " or ".join(f"'{loader.display_name}'" for loader in self.loaders)
        text = f"the host's {names} node" if self.loaders[0].host else names
        return f"{text} {self.loader_detail}" if self.loader_detail else text


STAGE_C_LOADER = Loader("SCPack_StageCLoader", "Load Stage C Prior (Stable Cascade)")
STAGE_B_LOADER = Loader("SCPack_StageBLoader", "Load Stage B Decoder (Stable Cascade)")
STAGE_A_LOADER = Loader("SCPack_StageALoader", "Load Stage A VAE (Stable Cascade)")
CODER_LOADER = Loader("SCPack_StageCCoderLoader", "Load Stage C VAE (Stable Cascade)")

FILE_KINDS = {record.kind: record for record in (
    FileKind("stage_c", "Stage C", "Stage C", "a Stage C file (stage_c*.safetensors)", "Stage C loader",
             (STAGE_C_LOADER,)),
    FileKind("stage_b", "Stage B", "Stage B", "a Stage B file (stage_b*.safetensors)", "Stage B loader",
             (STAGE_B_LOADER,)),
    FileKind("stage_a", "Stage A VQGAN", "Stage A", "a Stage A file (stage_a.safetensors)", "Stage A loader",
             (STAGE_A_LOADER,)),
    FileKind("effnet", "EfficientNet encoder", "EfficientNet encoder",
             "an EfficientNet encoder file (effnet_encoder.safetensors)", "EfficientNet encoder loader",
             (CODER_LOADER,), "(encoder_name)"),
    FileKind("previewer", "Previewer", "Previewer", "a Previewer file (previewer.safetensors)", "Previewer loader",
             (CODER_LOADER,), "(previewer_name)"),
    FileKind("stage_c_coder", "Stage C VAE (EfficientNet encoder + Previewer)", "EfficientNet encoder/Previewer",
             "an EfficientNet encoder or Previewer file", "Stage C VAE loader", (CODER_LOADER,)),
    FileKind("bundle"),  # a ComfyUI-style checkpoint without a Stage B/C: its parts say what it holds
    FileKind("bundled_stage_c", loaders=(STAGE_C_LOADER,)),
    FileKind("bundled_stage_b", loaders=(STAGE_B_LOADER,)),
    FileKind("controlnet", "Stable Cascade ControlNet", "ControlNet", "a Stable Cascade ControlNet file", "ControlNet loader",
             (Loader("SCPack_ControlNetLoader", "Load ControlNet (Stable Cascade)"),)),
    FileKind("lora", "LoRA", "LoRA", "a Stable Cascade LoRA file", "LoRA loader",
             (Loader("SCPack_StageCLoraLoader", "Load Stage C LoRA (Stable Cascade)"),)),
    FileKind("text_encoder", "text encoder", "text encoder", "a CLIP-G text encoder file", "text encoder loader",
             (Loader("CLIPLoader", "Load CLIP", host=True),), "with type 'stable_cascade'"),
    FileKind("clip_vision", "CLIP vision model", "CLIP vision model", "a CLIP vision file", "CLIP vision loader",
             (Loader("CLIPVisionLoader", "Load CLIP Vision", host=True),)),
    FileKind("unknown_unet", loaders=(Loader("CheckpointLoaderSimple", "Load Checkpoint", host=True),
                                      Loader("UNETLoader", "Load Diffusion Model", host=True))),
    FileKind("other_vae", "VAE of another model family", loaders=(Loader("VAELoader", "Load VAE", host=True),)),
    FileKind("empty", "empty checkpoint (no tensors)"),
    FileKind("unknown", "unrecognised checkpoint"),
)}


def file_kind(kind):
    """The record of `kind`; an empty one (no texts, no loader) for a kind without an entry."""
    return FILE_KINDS.get(kind) or FileKind(kind)
