"""``synthfm serve``: the interactive-segmentation worker over HTTP (used by the Slicer effect, locally or remotely)."""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import threading
from typing import Optional

EMBEDDING_CACHE_GB = 2.0  # --embedding-cache-gb's default: about 950 TinyViT slice embeddings in bf16 (2.1 MB each)


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve interactive segmentation over HTTP (Slicer's worker)",
                              description="Hold one model and the per-slice embedding cache in this process and "
                                          "answer prompts, background encoding and propagation over HTTP. Every "
                                          "request needs the access token. See docs/serve.md.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                                                       "0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one, see --port-file)")
    p.add_argument("--token", help="access token clients must send (default: $SYNTHFM_TOKEN, else a random one "
                                   "printed at start)")
    p.add_argument("--model", default="synthfm-lite", help="model loaded at start (registry name or checkpoint)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--cache-slices", type=int, default=512, help="slice embeddings kept in memory (4 MB each)")
    p.add_argument("--embedding-cache", metavar="DIR",
                   help="also keep slice embeddings in this folder, between runs: a volume opened again is not "
                        "encoded again (default: in memory only)")
    p.add_argument("--embedding-cache-gb", type=float, metavar="GB",
                   help=f"size cap of --embedding-cache in GB; the least recently used embeddings are deleted past it "
                        f"(default {EMBEDDING_CACHE_GB:g})")
    p.add_argument("--max-volumes", type=int, default=4, help="volumes kept; the least recently used goes first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--allow-paths", action="store_true",
                   help="let clients load volumes from files on this machine (the Slicer effect's local mode)")
    p.add_argument("--port-file", help="write {\"port\", \"pid\"} here (atomically) once the worker answers")
    p.add_argument("--exit-with-stdin", action="store_true",
                   help="stop when standard input closes (the process that started the worker has ended)")
    p.set_defaults(func=run)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a message naming the taken port and the fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): the port is taken or the address "
                         "is not this machine's; choose another --port (0 picks a free one) or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_embedding_cache(args: argparse.Namespace) -> Optional[int]:
    """``--embedding-cache`` writable and ``--embedding-cache-gb`` above 0 (before anything is loaded); returns the
    cap in bytes (None without a folder)."""
    import math

    from synthfm.io.checks import InputError, check_writable_folder, warn

    gb = EMBEDDING_CACHE_GB if args.embedding_cache_gb is None else args.embedding_cache_gb
    if not (gb > 0 and math.isfinite(gb)):
        raise InputError(f"--embedding-cache-gb {gb:g}: must be a size above 0 GB (the disk space the slice "
                         "embeddings may take); leave out --embedding-cache to keep none on disk")
    if args.embedding_cache is None:
        if args.embedding_cache_gb is not None:
            warn("--embedding-cache-gb has no effect without --embedding-cache DIR")
        return None
    check_writable_folder(args.embedding_cache, "--embedding-cache")
    return max(1, int(gb * 1e9))


def run(args: argparse.Namespace) -> int:
    cache_bytes = check_embedding_cache(args)
    missing = [name for name in ("torch", "fastapi", "uvicorn") if _missing(name)]
    if missing:
        print(f"synthfm serve: error: {', '.join(missing)} not installed in this Python ({sys.executable}); "
              f"install with `{sys.executable} -m pip install {' '.join(missing)}` (in Slicer: the SynthFM effect "
              "offers to install torch)", file=sys.stderr)
        return 3
    import secrets

    import uvicorn

    from synthfm.io import atomic_write_text
    from synthfm.serve.app import create_app
    from synthfm.serve.protocol import TOKEN_ENV
    from synthfm.serve.worker import Worker

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"access token: {token}", flush=True)
    worker = Worker(args.model, args.device, max_volumes=args.max_volumes, cache_slices=args.cache_slices,
                    embedding_cache=args.embedding_cache, embedding_cache_bytes=cache_bytes)
    sock = _listen(args.host, args.port)  # before loading the model: a taken port fails at once
    print(f"loading {args.model} ...", flush=True)
    info = dict(worker.info(), **{"device": str(worker.predictor.device)})
    if worker.predictor.store is not None:
        print(f"slice embeddings kept in {worker.predictor.store.folder} (at most {cache_bytes / 1e9:g} GB)", flush=True)
    app = create_app(worker, token, allow_paths=args.allow_paths)
    port = sock.getsockname()[1]
    if not _is_loopback(args.host):
        print("note: plain HTTP; serve on a trusted network or through an SSH tunnel (ssh -L)", flush=True)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(f"SynthFM worker ready: http://{args.host}:{port} (model {info['model']} on {info['device']})",
                      flush=True)
                if args.port_file:
                    import json

                    atomic_write_text(args.port_file, json.dumps({"port": port, "pid": os.getpid()}))

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    if args.exit_with_stdin:
        threading.Thread(target=_exit_with_stdin, args=(server,), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        worker.shutdown()
    return 0


def _exit_with_stdin(server) -> None:
    """Standard input reaches its end when the starting process (Slicer) ends, even when it was killed."""
    try:
        while sys.stdin.buffer.read(1024):
            pass
    except (OSError, ValueError):
        pass
    server.should_exit = True


def _missing(module: str) -> bool:
    """True when ``module`` cannot be imported (not installed, or broken)."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return True
    return False


def main(argv: Optional[list] = None) -> int:  # pragma: no cover - convenience for `python -m synthfm.serve.cli`
    from synthfm.cli import main as cli_main

    return cli_main(["serve", *(argv or sys.argv[1:])])
