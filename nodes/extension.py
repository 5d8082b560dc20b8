"""The extension object the host asks for: the list of this pack's nodes."""
from comfy_api.latest import ComfyExtension

from . import controlnet, fast_path, images, latents, loaders, lora, sampling, training


class StableCascadeExtension(ComfyExtension):
    async def get_node_list(self):
        return [*loaders.NODES, *latents.NODES, *images.NODES, *sampling.NODES, *lora.NODES, *fast_path.NODES,
                *controlnet.NODES, *training.NODES]
