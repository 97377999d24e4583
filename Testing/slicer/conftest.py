"""Put the Slicer API stand-in and the scripted module folders on the import path for these tests."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "Testing" / "slicer_standin", ROOT / "SynthFMSegment"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
