"""Reading and writing images, volumes and other user files (always atomically)."""
from synthfm.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from synthfm.io.volume import Volume, read_volume, write_volume

__all__ = ["Volume", "read_volume", "write_volume", "atomic_path", "atomic_write_bytes", "atomic_write_text"]
