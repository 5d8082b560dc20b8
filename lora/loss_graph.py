"""The loss curve of a training run as a picture (PIL), with a moving average over the raw values."""
from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 640, 360, 48


def moving_average(values, window):
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def draw_loss_graph(losses):
    """losses: {step: loss}. Light grey: every update; blue: the moving average."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([MARGIN, MARGIN // 2, WIDTH - MARGIN // 2, HEIGHT - MARGIN], outline="black")
    if not losses:
        draw.text((MARGIN + 8, HEIGHT // 2), "no finished updates", fill="black")
        return image
    steps, values = list(losses), list(losses.values())
    low, high = min(values), max(values)
    span_x = max(steps[-1] - steps[0], 1)
    span_y = (high - low) or 1.0

    def point(step, value):
        x = MARGIN + (step - steps[0]) / span_x * (WIDTH - 1.5 * MARGIN)
        y = HEIGHT - MARGIN - (value - low) / span_y * (HEIGHT - 1.5 * MARGIN)
        return (x, y)

    smooth = moving_average(values, max(1, len(values) // 20))
    for series, colour in ((values, (190, 190, 190)), (smooth, (30, 80, 200))):
        points = [point(s, v) for s, v in zip(steps, series)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        else:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
    draw.text((4, MARGIN // 2), f"{high:.4g}", fill="black")
    draw.text((4, HEIGHT - MARGIN - 10), f"{low:.4g}", fill="black")
    draw.text((MARGIN, HEIGHT - MARGIN + 6), f"step {steps[0]}", fill="black")
    draw.text((WIDTH - MARGIN * 2.5, HEIGHT - MARGIN + 6), f"step {steps[-1]}", fill="black")
    draw.text((MARGIN + 8, MARGIN // 2 + 6), f"loss (first {values[0]:.4g}, last {values[-1]:.4g})", fill="black")
    return image
