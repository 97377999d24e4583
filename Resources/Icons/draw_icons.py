"""Draw the SynthFM extension icon (128x128) and module icon, and a screenshot of the preview."""
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

def icon(size=128):
    s = 4 * size
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle([8, 8, s - 8, s - 8], radius=s // 6, fill=(28, 46, 74, 255))
    d.ellipse([s * .16, s * .14, s * .84, s * .86], fill=(150, 160, 175, 255))   # synthetic "body"
    d.ellipse([s * .30, s * .30, s * .66, s * .62], fill=(70, 200, 120, 255))    # segmented structure
    d.ellipse([s * .30, s * .30, s * .66, s * .62], outline=(255, 255, 255, 255), width=s // 48)
    cx, cy, r = s * .48, s * .46, s * .05                                          # positive click
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 210, 40, 255), outline=(0, 0, 0, 255), width=6)
    return im.resize((size, size), Image.LANCZOS)

def effect_icon(size=21):
    """Segment Editor effect button: a structure with a box prompt and a positive click."""
    s = 8 * size
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.ellipse([s * .18, s * .22, s * .78, s * .80], fill=(70, 200, 120, 255))
    d.rectangle([s * .08, s * .10, s * .90, s * .90], outline=(255, 210, 40, 255), width=s // 12)
    cx, cy, r = s * .48, s * .50, s * .12
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 255, 255, 255), outline=(0, 0, 0, 255), width=s // 24)
    return im.resize((size, size), Image.LANCZOS)

icon(128).save("Resources/Icons/SynthFM.png")
icon(128).save("SynthFMTrain/Resources/Icons/SynthFMTrain.png")
icon(128).save("SynthFMSegment/Resources/Icons/SynthFMSegment.png")
effect_icon(21).save("SynthFMSegment/Resources/Icons/SynthFMEffect.png")
if "--icons-only" in sys.argv:
    raise SystemExit

sys.path[:0] = ["Testing/slicer_standin", "SynthFMTrain"]
import slicer
from SynthFMTrainLib.logic import SynthFMTrainLogic
vol, seg = SynthFMTrainLogic().preview("ct", seed=1, overrides={"size": 256})
a = slicer.util.arrayFromVolume(vol); m = slicer.util.arrayFromSegmentBinaryLabelmap(seg, "target")
k = int(np.argmax(m.sum((1, 2))))
g = (np.clip(a[k], 0, 1) * 255).astype(np.uint8)
rgb = np.stack([g] * 3, -1).astype(float)
rgb[m[k] > 0] = 0.55 * rgb[m[k] > 0] + 0.45 * np.array([70, 200, 120])
img = Image.fromarray(rgb.astype(np.uint8)).resize((512, 512), Image.NEAREST)
canvas = Image.new("RGB", (512, 560), (30, 30, 30)); canvas.paste(img, (0, 0))
ImageDraw.Draw(canvas).text((8, 520), "SynthFMTrain Preview: synthetic CT volume (slice %d) + target segment.\n"
                            "Rendered offscreen from the module logic, not a Slicer screen capture." % k, fill=(230, 230, 230))
canvas.save("Resources/Screenshots/SynthFM_modules.png")
