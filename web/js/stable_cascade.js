// The pack's editor extension: live latent sizes on the empty-latent node, and what each chosen
// model file is on the loader nodes (from the pack's /stable_cascade/file_kinds route, which reads
// only safetensors headers). Everything here is optional decoration: when a route is slow or
// fails, the nodes work exactly as without the extension, and nothing is thrown at the editor.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const PACK_PREFIX = "SCPack_";
const EMPTY_LATENT = "SCPack_EmptyLatent";
const ROUTE_TIMEOUT_MS = 8000;
const WRONG_MARK = "\u2717"; // ✗
const INFO_WIDGET = "sc_info";

// --- Latent sizes: the same arithmetic as stages/latent_sizes.py (a browser test compares them) ----
const ORIGINAL_COMPRESSION = 42.67;
const TRAINED_STAGE_C_TOKENS = 24 * 24;
const STAGE_A_COMPRESSION = 4;

function stageCCompression(mode, number, width, height) {
  if (mode === "number") return Number(number) > 0 ? Number(number) : null;
  if (mode === "auto") return Math.sqrt((width * height) / TRAINED_STAGE_C_TOKENS);
  return ORIGINAL_COMPRESSION;
}

// 1024 / (1024 / 24) is 24.000000000000004: rounded to 6 places before ceil, as the Python side does.
const ceil6 = (value) => Math.ceil(Math.round(value * 1e6) / 1e6);

export function latentSizes(width, height, mode = "original", number = ORIGINAL_COMPRESSION) {
  const compression = stageCCompression(mode, number, width, height);
  if (!compression) return null;
  return {
    compression,
    stageC: [ceil6(height / compression), ceil6(width / compression)],
    stageB: [Math.floor(height / STAGE_A_COMPRESSION), Math.floor(width / STAGE_A_COMPRESSION)],
    image: [Math.floor(height / STAGE_A_COMPRESSION) * STAGE_A_COMPRESSION, Math.floor(width / STAGE_A_COMPRESSION) * STAGE_A_COMPRESSION],
  };
}

function widgetValue(node, name, fallback) {
  const widget = node.widgets?.find((w) => w.name === name);
  return widget === undefined ? fallback : widget.value;
}

function sizeLines(node) {
  const width = Number(widgetValue(node, "width", 1024));
  const height = Number(widgetValue(node, "height", 1024));
  const batch = Number(widgetValue(node, "batch_size", 1));
  const sizes = latentSizes(width, height, widgetValue(node, "compression", "original"),
                            widgetValue(node, "compression_number", ORIGINAL_COMPRESSION));
  if (!sizes) return [{ text: "compression must be a positive number", wrong: true }];
  const hw = ([h, w]) => `${w}\u00d7${h}`;
  const lines = [
    { text: `Stage C latent ${hw(sizes.stageC)} (\u00f7${sizes.compression.toFixed(2)})` },
    { text: `Stage B latent ${hw(sizes.stageB)}` },
    { text: `image ${hw(sizes.image)}${batch > 1 ? ` \u00d7 ${batch}` : ""}` },
  ];
  if (width % 8 || height % 8) lines.push({ text: "sides must be multiples of 8", wrong: true });
  return lines;
}

// --- A text widget drawn under the node's inputs; never saved, never sent to the server ----------
const LINE_HEIGHT = 16;
const MARGIN = 15;

function wrap(ctx, text, maxWidth) {
  const words = String(text).split(" ");
  const lines = [];
  let line = "";
  for (const word of words) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > maxWidth) {
      lines.push(line);
      line = word;
    } else {
      line = candidate;
    }
  }
  if (line) lines.push(line);
  return lines;
}

const measureContext = document.createElement("canvas").getContext("2d");

function infoWidget(node) {
  let widget = node.widgets?.find((w) => w.name === INFO_WIDGET);
  if (widget) return widget;
  widget = {
    name: INFO_WIDGET,
    type: "sc_info",
    value: [], // [{text, wrong}] — read by the browser tests too
    serialize: false,
    options: { serialize: false },
    wrapped(width) {
      measureContext.font = "12px Arial";
      return this.value.flatMap((line) => wrap(measureContext, line.text, width - 2 * MARGIN).map((text) => ({ text, wrong: line.wrong })));
    },
    computeSize(width) {
      return [width, Math.max(1, this.wrapped(width ?? node.size[0]).length) * LINE_HEIGHT + 6];
    },
    draw(ctx, _node, width, y) {
      ctx.save();
      ctx.font = "12px Arial";
      ctx.textAlign = "left";
      this.wrapped(width).forEach((line, i) => {
        ctx.fillStyle = line.wrong ? "#ff6b6b" : (LiteGraph?.WIDGET_SECONDARY_TEXT_COLOR ?? "#999");
        ctx.fillText(line.text, MARGIN, y + LINE_HEIGHT * (i + 1));
      });
      ctx.restore();
    },
  };
  node.addCustomWidget(widget);
  return widget;
}

function showLines(node, lines) {
  const widget = infoWidget(node);
  const before = widget.value.length;
  widget.value = lines;
  const needed = node.computeSize();
  if (lines.length !== before && node.size[1] < needed[1]) node.setSize([node.size[0], needed[1]]);
  node.setDirtyCanvas?.(true, true);
}

function onWidgetChange(node, names, react) {
  for (const widget of node.widgets ?? []) {
    if (!names.includes(widget.name)) continue;
    const original = widget.callback;
    widget.callback = function (...args) {
      const result = original?.apply(this, args);
      try {
        react();
      } catch (error) {
        console.warn("[stable cascade] could not update the node's info", error);
      }
      return result;
    };
  }
}

function attachSizes(node) {
  const update = () => showLines(node, sizeLines(node));
  onWidgetChange(node, ["width", "height", "batch_size", "compression", "compression_number"], update);
  update();
  node.scUpdateInfo = update;
}

// --- Loader file marks ------------------------------------------------------------------------
async function getJson(path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ROUTE_TIMEOUT_MS);
  try {
    const response = await api.fetchApi(path, { signal: controller.signal, cache: "no-store" });
    if (!response.ok) return null;
    return await response.json();
  } catch {
    return null; // offline, slow or an older pack on the server: no marks, nothing else changes
  } finally {
    clearTimeout(timer);
  }
}

let fileInputs = null; // Promise of {node id: [input names]} (null answer: no marks at all)

function fileLines(node, inputs, kindsByInput) {
  const lines = [];
  for (const input of inputs) {
    const chosen = widgetValue(node, input, null);
    const file = kindsByInput[input]?.files?.[chosen];
    if (!chosen || chosen === "none") continue;
    if (!file) {
      lines.push({ text: `${chosen}: not found in the model folders`, wrong: true });
    } else if (file.fits === false) {
      lines.push({ text: `${WRONG_MARK} ${input}: ${file.summary}; this input needs ${file.wanted}`, wrong: true });
    } else {
      lines.push({ text: `${inputs.length > 1 ? input + ": " : ""}${file.summary}` });
    }
  }
  return lines;
}

function markChoices(node, inputs, kindsByInput) {
  for (const input of inputs) {
    const widget = node.widgets?.find((w) => w.name === input);
    if (!widget) continue;
    widget.options.getOptionLabel = (value) => {
      const file = kindsByInput[input]?.files?.[value];
      return file?.fits === false ? `${value}  ${WRONG_MARK} ${file.summary.split(",")[0]}` : String(value ?? "");
    };
  }
}

async function refreshFileInfo(node, inputs) {
  const answers = await Promise.all(inputs.map((input) =>
    getJson(`/stable_cascade/file_kinds?node=${encodeURIComponent(node.comfyClass)}&input=${encodeURIComponent(input)}`)));
  const kindsByInput = Object.fromEntries(inputs.map((input, i) => [input, answers[i]]));
  if (answers.every((answer) => answer === null)) return;
  markChoices(node, inputs, kindsByInput);
  showLines(node, fileLines(node, inputs, kindsByInput));
  node.scFileKinds = kindsByInput;
}

async function attachFileInfo(node) {
  const inputs = (await fileInputs)?.[node.comfyClass];
  if (!inputs?.length) return;
  const update = () => refreshFileInfo(node, inputs);
  onWidgetChange(node, inputs, update);
  node.scUpdateInfo = update;
  await update();
}

app.registerExtension({
  name: "stable_cascade.editor",
  init() {
    fileInputs = getJson("/stable_cascade/file_inputs"); // not awaited: a slow server never holds up the editor
  },
  nodeCreated(node) {
    try {
      if (!node.comfyClass?.startsWith(PACK_PREFIX)) return;
      if (node.comfyClass === EMPTY_LATENT) attachSizes(node);
      else attachFileInfo(node).catch((error) => console.warn("[stable cascade] file info unavailable", error));
    } catch (error) {
      console.warn("[stable cascade] node decoration skipped", error);
    }
  },
  loadedGraphNode(node) {
    // widget values of a loaded workflow arrive after nodeCreated
    if (node.comfyClass?.startsWith(PACK_PREFIX)) node.scUpdateInfo?.();
  },
});
