"""Stable Cascade for ComfyUI: the pack's entry point.

The host imports this file by path and calls comfy_entrypoint(); everything that touches the host
lives under nodes/. Importing this module itself must stay free of host imports so that the pure
PyTorch parts (stages/, samplers/) can be used and tested without a running host.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import web_routes
    from .nodes.extension import StableCascadeExtension

    extension = StableCascadeExtension()
    web_routes.register(await extension.get_node_list())
    return extension


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
