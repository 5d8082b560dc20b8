"""The Stage C LoRA trainer node: validate, load the data, call lora.training.train, save, wrap."""
import logging
import os

import numpy as np
import torch

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..lora import files, load_lora_file
from ..lora.dataset import folder_pairs
from ..lora.layers import LAYER_CHOICES, LoRASet
from ..lora.loss_graph import draw_loss_graph
from ..lora.token_spec import parse_new_tokens
from ..lora.training import LOSS_WEIGHTINGS, PRECISIONS, NewTokens, Settings, choose_precision, settings_problems, train
from ..samplers.gdf import sample
from . import lora_patches
from .autograd_ready import make_autograd_ready
from .choices import choice_problems
from .host_models import cascade_stage_of
from .previews import make_preview_fn
from .training_data import encode_latents, folder_dataset, host_dataset, resolve_folder
from .training_outputs import embedding_path, lora_path, output_problems
from .training_text import CaptionEncoder, initial_vectors, token_clashes

CATEGORY = "stable_cascade/training"
PREVIEW_STEPS = 20


def _first(value):
    return value[0] if isinstance(value, list) else value


def widget_problems(dataset_folder, lora_name, resume, new_tokens, steps, batch_size, gradient_accumulation, resolution,
                    learning_rate=1e-4, caption_dropout=0.0, layers="attention", precision="auto", loss_weighting="p2"):
    """Every problem of the node's own settings, found before anything loads."""
    problems = []
    choices = choice_problems(layers=(layers, list(LAYER_CHOICES)), precision=(precision, list(PRECISIONS)),
                              loss_weighting=(loss_weighting, list(LOSS_WEIGHTINGS)))
    if choices is not True:
        problems.append(choices)
    dataset_size = None
    if dataset_folder.strip():
        try:
            dataset_size = len(folder_pairs(resolve_folder(dataset_folder)))
        except ValueError as error:
            problems.append(str(error))
    try:
        tokens = parse_new_tokens(new_tokens)
    except ValueError as error:
        problems.append(str(error))
        tokens = []
    problems += output_problems(lora_name, resume, tokens)
    settings = Settings(steps=steps, batch_size=batch_size, gradient_accumulation=gradient_accumulation,
                        learning_rate=learning_rate, caption_dropout=caption_dropout)
    problems += settings_problems(settings, dataset_size)
    if resolution % 32 or resolution < 64:
        problems.append(f"resolution must be a multiple of 32 and at least 64 (Stage C latents are 1/32 of it), got {resolution}")
    return problems


class TrainStageCLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_TrainStageCLoRA",
            display_name="Train Stage C LoRA (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Trains a LoRA (and optionally new prompt tokens) for Stage C with the original objective: EfficientNet latents, "
                "GDF noise, epsilon target, P2 or adaptive loss weight, caption dropout. The base model stays frozen; runs on one "
                "GPU with gradient checkpointing and bf16 (or fp16 with a gradient scaler). Saves to models/loras (host "
                "lora_prior_unet keys, loads with LoraLoader) and each new token to models/embeddings (use it in prompts as "
                "embedding:<name>). Interrupting keeps the last save; 'resume' continues it."
            ),
            is_input_list=True,
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="Stage C model (the pack's Stage C loader or the host's UNETLoader)."),
                io.Clip.Input("clip", tooltip="CLIP loaded with type 'stable_cascade' (CLIP-G): encodes the captions."),
                io.Vae.Input("stage_c_vae", tooltip="Stage C VAE with the EfficientNet encoder (makes the training latents) and, "
                                                    "for previews, the Previewer."),
                io.Image.Input("images", optional=True, tooltip="Training images from the host's dataset nodes (e.g. Load Image "
                                                                "and Text Dataset from Folder). Or leave unconnected and set dataset_folder."),
                io.String.Input("captions", optional=True, force_input=True,
                                tooltip="One caption per image, from the same dataset node as 'images'."),
                io.String.Input("dataset_folder", default="",
                                tooltip="A folder of images with a <name>.txt caption each (absolute, or inside ComfyUI's input "
                                        "folder). Used when 'images' is not connected."),
                io.String.Input("lora_name", default="stage_c_lora",
                                tooltip="File name in models/loras (.safetensors is added). Must not exist unless resume is on."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue the saved LoRA of this name (and its tokens) up to 'steps' updates in total."),
                io.Int.Input("rank", default=4, min=1, max=256, tooltip="LoRA rank (the original: 4)."),
                io.Combo.Input("layers", options=list(LAYER_CHOICES), default="attention",
                               tooltip="attention: the q/k/v/out projections of every attention block (the original). "
                                       "all_linear: every Linear layer (more capacity, more memory)."),
                io.String.Input("new_tokens", default="", multiline=True,
                                tooltip="One new token per line with an optional init pattern, e.g. '[fernando] ^dog</w>': the token starts "
                                        "as the mean of the vocabulary entries matching the pattern. Write the token in captions; "
                                        "in prompts afterwards use embedding:fernando."),
                io.Int.Input("steps", default=1000, min=1, max=1000000, tooltip="Optimiser updates in total."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-5, round=1e-7,
                               tooltip="AdamW learning rate (the original: 1e-4)."),
                io.Int.Input("batch_size", default=1, min=1, max=256,
                             tooltip="Images per update; split over gradient_accumulation forward passes (must divide evenly)."),
                io.Int.Input("gradient_accumulation", default=1, min=1, max=256,
                             tooltip="Forward passes per update: larger effective batches in the same memory."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the image order, noise, noise levels and caption dropout."),
                io.Float.Input("caption_dropout", default=0.05, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of captions replaced by the empty caption (the original: 0.05), for guidance."),
                io.Int.Input("resolution", default=768, min=64, max=4096, step=32,
                             tooltip="Images are resized and centre-cropped to this square size (the original LoRA config: 768)."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="auto: bf16 on GPUs that have it, else fp16 with a gradient scaler; fp32 on the CPU."),
                io.Boolean.Input("gradient_checkpointing", default=True,
                                 tooltip="Recompute each block in the backward pass: much less memory, about a third slower."),
                io.Combo.Input("loss_weighting", options=list(LOSS_WEIGHTINGS), default="p2",
                               tooltip="p2: 1/(1+SNR), the original's default. adaptive: equalise the loss over noise levels."),
                io.Int.Input("save_every", default=100, min=1, max=1000000,
                             tooltip="Save the LoRA every this many updates (and at the end, or when interrupted)."),
                io.Int.Input("preview_every", default=100, min=0, max=1000000,
                             tooltip="Every this many updates, sample the first caption and show it through the Previewer (0: off)."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input model with the trained LoRA applied."),
                io.String.Output(display_name="lora_file", tooltip="The saved LoRA's name in models/loras."),
                io.Image.Output(display_name="loss_graph", tooltip="The loss of every update, with its moving average."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, dataset_folder, lora_name, resume, new_tokens, steps, batch_size, gradient_accumulation,
                        resolution, learning_rate, caption_dropout, layers, precision, loss_weighting):
        problems = widget_problems(_first(dataset_folder), _first(lora_name), _first(resume), _first(new_tokens),
                                   _first(steps), _first(batch_size), _first(gradient_accumulation), _first(resolution),
                                   _first(learning_rate), _first(caption_dropout), _first(layers), _first(precision),
                                   _first(loss_weighting))
        return "; ".join(problems) if problems else True

    @classmethod
    def execute(cls, model, clip, stage_c_vae, dataset_folder, lora_name, resume, rank, layers, new_tokens, steps,
                learning_rate, batch_size, gradient_accumulation, seed, caption_dropout, resolution, precision,
                gradient_checkpointing, loss_weighting, save_every, preview_every, images=None, captions=None):
        model, clip, vae = model[0], clip[0], stage_c_vae[0]
        args = {name: _first(value) for name, value in dict(
            dataset_folder=dataset_folder, lora_name=lora_name, resume=resume, rank=rank, layers=layers,
            new_tokens=new_tokens, steps=steps, learning_rate=learning_rate, batch_size=batch_size,
            gradient_accumulation=gradient_accumulation, seed=seed, caption_dropout=caption_dropout,
            resolution=resolution, precision=precision, gradient_checkpointing=gradient_checkpointing,
            loss_weighting=loss_weighting, save_every=save_every, preview_every=preview_every).items()}
        with torch.inference_mode(False):
            return io.NodeOutput(*run_training(model, clip, vae, images, captions, node_id=cls.hidden.unique_id, **args))


def _check_before_loading(model, clip, vae, images, captions, args):
    """Everything that can be wrong with the inputs, before any model is loaded or trained."""
    if cascade_stage_of(model) != "c":
        raise ValueError("the 'model' input is not a Stage C model: the trainer trains Stage C LoRAs")
    if clip is None or not hasattr(clip.tokenizer, "clip"):
        raise ValueError("the 'clip' input must be a CLIP loaded with type 'stable_cascade' (CLIP-G)")
    if images is None and not args["dataset_folder"].strip():
        raise ValueError("no dataset: connect 'images' and 'captions' from a dataset node, or set dataset_folder")
    problems = widget_problems(args["dataset_folder"] if images is None else "", args["lora_name"], args["resume"],
                               args["new_tokens"], args["steps"], args["batch_size"], args["gradient_accumulation"],
                               args["resolution"], args["learning_rate"], args["caption_dropout"], args["layers"],
                               args["precision"], args["loss_weighting"])
    tokens = parse_new_tokens(args["new_tokens"]) if not problems else []
    problems += token_clashes(clip, tokens)
    host_model = model.model
    precision = choose_precision(args["precision"], model.load_device)
    compute_dtype = host_model.manual_cast_dtype or host_model.get_dtype()
    if precision.autocast_dtype is None and compute_dtype != torch.float32:
        problems.append(f"precision fp32 needs Stage C computing in fp32, but this model computes in {compute_dtype}: "
                        "load it with weight_dtype fp32, or choose precision bf16/fp16")
    if args["preview_every"] and getattr(getattr(vae, "first_stage_model", None), "previewer", True) is None:
        problems.append("preview_every is on but the Stage C VAE has no Previewer: load previewer.safetensors in it, "
                        "or set preview_every to 0")
    if args["resume"] and not problems:
        info = files.read_training_info(lora_path(args["lora_name"]))
        for key in ("rank", "layers"):
            if info.get(key) != args[key]:
                problems.append(f"resume: the saved LoRA has {key} {info.get(key)!r}, this run asks for {args[key]!r}")
        saved_tokens = [t[0] for t in info.get("new_tokens", [])]
        if saved_tokens != [t.token for t in tokens]:
            problems.append(f"resume: the saved LoRA trained the new tokens {saved_tokens}, this run lists {[t.token for t in tokens]}")
        if info.get("steps_done", 0) >= args["steps"]:
            problems.append(f"resume: the saved LoRA already has {info.get('steps_done')} updates; set steps higher to continue")
    if problems:
        raise ValueError("; ".join(problems))
    return tokens, precision, compute_dtype


def run_training(model, clip, vae, images, captions, *, node_id=None, **args):
    tokens, precision, compute_dtype = _check_before_loading(model, clip, vae, images, captions, args)
    image_list, caption_list = (folder_dataset(args["dataset_folder"]) if images is None
                                else host_dataset(images, captions))
    settings = Settings(steps=args["steps"], learning_rate=args["learning_rate"], batch_size=args["batch_size"],
                        gradient_accumulation=args["gradient_accumulation"], seed=args["seed"],
                        caption_dropout=args["caption_dropout"], precision=precision.name,
                        gradient_checkpointing=args["gradient_checkpointing"], loss_weighting=args["loss_weighting"])
    problems = settings_problems(settings, len(caption_list))
    if problems:
        raise ValueError("; ".join(problems))

    latents = encode_latents(vae, model, image_list, args["resolution"])
    encoder = CaptionEncoder(clip, tokens)
    make_autograd_ready(clip.cond_stage_model)
    start_vectors = initial_vectors(clip, tokens)

    host_model = model.model
    micro_shape = [settings.micro_batch] + list(latents.shape[1:])
    mm.load_models_gpu([model], memory_required=host_model.memory_required(micro_shape) * 3,
                       minimum_memory_required=host_model.memory_required(micro_shape))
    network = make_autograd_ready(host_model.diffusion_model)
    device = model.load_device

    path = lora_path(args["lora_name"])
    lora = LoRASet(network, rank=args["rank"], layers=args["layers"])
    start_step = 0
    if args["resume"]:
        files.load_lora_into(load_lora_file(path, lora_patches.stage_c_shapes(model)), lora, os.path.basename(path))
        start_step = files.read_training_info(path)["steps_done"]
        start_vectors = {t.name: files.load_token_embedding(embedding_path(t.name))[0] for t in tokens}
    new_tokens = NewTokens(start_vectors) if tokens else None

    info = {"rank": args["rank"], "layers": args["layers"], "new_tokens": [[t.token, t.init_pattern] for t in tokens],
            "resolution": args["resolution"], "learning_rate": args["learning_rate"], "seed": args["seed"],
            "batch_size": args["batch_size"], "gradient_accumulation": args["gradient_accumulation"],
            "loss_weighting": args["loss_weighting"], "steps_done": start_step}
    progress = comfy.utils.ProgressBar(settings.steps, node_id=node_id)
    progress.update_absolute(start_step, settings.steps)
    preview = _previewer(model, network, encoder, vae, caption_list[0], latents.shape[-2:], precision, compute_dtype, device,
                         args["seed"])
    state = {"saved": start_step, "done": start_step}

    def save(step):
        files.save_lora(path, lora, dict(info, steps_done=step))
        for token_name, vector in (new_tokens.vectors().items() if new_tokens is not None else []):
            files.save_token_embedding(embedding_path(token_name), vector)
        state["saved"] = step

    def on_update(step, loss):
        state["done"] = step
        if step % args["save_every"] == 0:
            save(step)
        image = None
        if args["preview_every"] and (step % args["preview_every"] == 0 or step == 1):
            image = preview(new_tokens)
        progress.update_absolute(step, settings.steps, image)
        _progress_text(node_id, f"step {step}/{settings.steps}  loss {loss:.5f}")
        if step % 10 == 0 or step == settings.steps:
            logging.info(f"[stable cascade] LoRA training step {step}/{settings.steps}, loss {loss:.5f}")
        mm.throw_exception_if_processing_interrupted()

    try:
        losses = train(network, lora, latents, caption_list, encoder, settings, tokens=new_tokens, start_step=start_step,
                       on_update=on_update, device=device)
    except BaseException:
        if state["done"] > state["saved"]:
            save(state["done"])  # interrupted or stopped: keep every finished update
        raise
    if state["saved"] != settings.steps:
        save(settings.steps)
    first = losses[min(losses)] if losses else float("nan")
    logging.info(f"[stable cascade] LoRA saved to {path} after {settings.steps} updates "
                 f"(loss {first:.5f} at the first update of this run, {losses.get(settings.steps, float('nan')):.5f} at the last)")
    trained_model = lora_patches.patch_model(model, files.as_stage_c_lora(lora), 1.0)
    graph = np.asarray(draw_loss_graph(losses), dtype=np.float32) / 255.0
    name = os.path.relpath(path, os.path.dirname(lora_path("x")))
    return trained_model, name, torch.from_numpy(graph)[None]


def _progress_text(node_id, text):
    if node_id is None:
        return
    try:
        from server import PromptServer
        PromptServer.instance.send_progress_text(text, node_id)
    except Exception as error:  # no server (scripts, tests in-process): the log has the loss too
        logging.debug(f"progress text not sent: {error}")


def _previewer(model, network, encoder, vae, caption, latent_size, precision, compute_dtype, device, seed):
    """preview(tokens) -> the host's preview tuple of a short GDF sample of `caption` with the current LoRA."""
    show = make_preview_fn(model, vae)

    def epsilon(x, r, **inputs):
        inputs = {k: v.to(device=device, dtype=compute_dtype) for k, v in inputs.items()}
        return network(x.to(device=device, dtype=compute_dtype), r.to(device=device, dtype=torch.float32), **inputs).float()

    @torch.no_grad()
    def preview(tokens):
        vectors = tokens.vectors() if tokens is not None else {}
        width = network.clip_img_mapper.in_features
        conditions = dict(encoder([caption], vectors), clip_img=torch.zeros(1, 1, width))
        unconditional = dict(encoder([""], {}), clip_img=torch.zeros(1, 1, width))
        with precision.autocast(device):
            x0 = sample(epsilon, shape=(1, 16, *latent_size), conditions=conditions, unconditional=unconditional,
                        steps=PREVIEW_STEPS, cfg=4.0, shift=2.0, generator=torch.Generator().manual_seed(seed), device=device)
        return show(x0) if show is not None else None

    return preview


NODES = [TrainStageCLoRA]
