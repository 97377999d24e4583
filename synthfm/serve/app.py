"""The worker's HTTP API (FastAPI): every route needs the access token; documented in docs/serve.md.

Routes are plain ``def`` functions: FastAPI runs them in its thread pool, so a prompt waiting for the model
never blocks the event loop; the model itself is shared through the worker's priority gate.
"""
from __future__ import annotations

import secrets
from typing import Annotated, Any, Dict, List, Optional, Tuple, Union

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from synthfm import __version__
from synthfm.serve.protocol import TOKEN_HEADER, parse_window, volume_from_bytes
from synthfm.serve.worker import Worker

Point = List[float]


class PromptSet(BaseModel):
    """Prompts on one slice, in voxel indices (i, j, k) of the volume; a box is two opposite corners."""

    axis: int = Field(0, ge=0, le=2, description="slicing axis of the (Z, Y, X) volume: 0 axial (k), 1 coronal (j), "
                                                 "2 sagittal (i)")
    positive: List[Point] = Field(default_factory=list, description="positive points [i, j, k]")
    negative: List[Point] = Field(default_factory=list, description="negative points [i, j, k]")
    box: Optional[List[Point]] = Field(None, description="two opposite corners [[i, j, k], [i, j, k]]")


class PredictRequest(PromptSet):
    multimask: Union[bool, str] = Field("auto", description="'auto': the model's own choice (ModelSpec.mask_choice); "
                                                          "true: 3 candidates, the IoU head picks; false: one mask")
    candidates: bool = Field(False, description="also return the decoder's raw candidate masks (before the point cut)")
    choice_masks: bool = Field(False, description="also return the mask each of the three choices gives "
                                                  "(choice_masks[k] = the mask candidate=k answers; for thumbnails)")
    candidate: Optional[int] = Field(None, ge=0, le=2, description="return this one of the decoder's three "
                                                                  "candidates instead of the model's pick (one point, "
                                                                  "or a box the model fits three candidates to)")


class PropagateRequest(PromptSet):
    boxes: List[List[Point]] = Field(
        default_factory=list, description="boxes on several slices, one per slice (each two opposite corners); "
                                          "points join the slice they lie on")
    direction: str = Field("both", description="both, up (higher slice indices) or down")
    options: Dict[str, Union[float, int, bool, str, None]] = Field(
        default_factory=dict,
        description="PropagationOptions overrides, e.g. {\"min_score\": 0.5, \"between\": \"register\"}")
    candidates: Dict[int, Annotated[int, Field(ge=0, le=2)]] = Field(
        default_factory=dict, description="prompted slice index -> the candidate (0-2) chosen there instead of the "
                                          "model's pick")


class EncodeRequest(BaseModel):
    axis: int = Field(0, ge=0, le=2)
    around: Optional[int] = Field(None, description="encode from this slice outwards (default: the middle)")


class PathVolume(BaseModel):
    path: str = Field(description="a .npy (Z, Y, X) array or a volume file (NIfTI, NRRD, ...) readable by the server")
    window: str = Field("auto", description="auto, percentile, minmax, a CT preset, or 'low,high'")
    spacing: Optional[Tuple[float, float, float]] = Field(None, description="voxel size x, y, z in mm")


class ModelRequest(BaseModel):
    name: str = Field(description="registry name or decoder checkpoint known to the server (see /info)")


def _errors(app: FastAPI) -> None:
    """Bad input -> 400 with the message; unknown volume or job -> 404; both as {"detail": message}."""

    @app.exception_handler(ValueError)
    def bad_input(request: Request, exc: ValueError):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(LookupError)
    def not_found(request: Request, exc: LookupError):
        return JSONResponse(status_code=404, content={"detail": str(exc).strip("'\"")})

    @app.exception_handler(FileNotFoundError)
    def missing_file(request: Request, exc: FileNotFoundError):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    def failure(request: Request, exc: Exception):  # a worker bug still reaches the user as one line
        return JSONResponse(status_code=500, content={"detail": f"the worker failed: {type(exc).__name__}: {exc}"})


def create_app(worker: Worker, token: str, allow_paths: bool = False) -> FastAPI:
    """The FastAPI application serving ``worker``; requests without header ``X-SynthFM-Token: <token>`` get 401."""
    if not token:
        raise ValueError("the worker needs an access token (--token or $SYNTHFM_TOKEN)")
    header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False, description="the access token given to synthfm serve")

    def check_token(given: Optional[str] = Depends(header)) -> None:
        if not given:
            raise HTTPException(401, f"this SynthFM worker needs an access token in the {TOKEN_HEADER} header")
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "wrong access token for this SynthFM worker: check the token in the "
                                     "SynthFM settings (remote server) or restart the worker")

    app = FastAPI(title="SynthFM worker", version=__version__,
                  description="Interactive promptable segmentation: one model in memory, per-slice embedding "
                              "cache, background encoding and propagation jobs. See docs/serve.md.",
                  docs_url=None, redoc_url=None, openapi_url=None)  # nothing is served without the token
    _errors(app)
    api = APIRouter(dependencies=[Depends(check_token)])

    @api.get("/health", summary="the worker answers (readiness)")
    def health() -> Dict[str, Any]:
        return {"status": "ok", "model": worker.model_name, "model_loaded": worker.model_loaded}

    @api.get("/info", summary="version, model, device, models the server knows, volumes, queue")
    def info() -> Dict[str, Any]:
        return worker.info()

    @api.post("/model", summary="switch the one model in memory (clears cached embeddings for every client)")
    def model(request: ModelRequest) -> Dict[str, Any]:
        worker.use_model(request.name)
        return worker.info()

    @api.put("/volumes/{volume_id}", summary="upload a volume as raw C-ordered (Z, Y, X) bytes",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload(volume_id: str, request: Request,
                     shape: str = Query(description="Z,Y,X"), dtype: str = Query("float32"),
                     compression: str = Query("none", description="none or zlib"),
                     window: str = Query("auto", description="auto, percentile, minmax, a CT preset, or 'low,high'"),
                     spacing: str = Query("1,1,1", description="voxel size x,y,z in mm")) -> Dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        body = await request.body()

        def store() -> Dict[str, Any]:
            array = volume_from_bytes(body, shape, dtype, compression)
            return worker.add_volume(volume_id, array, parse_window(window), _floats(spacing, "spacing"))

        return await run_in_threadpool(store)

    @api.post("/volumes/{volume_id}/from-path", summary="load a volume from a file on the server (local mode)")
    def from_path(volume_id: str, request: PathVolume) -> Dict[str, Any]:
        if not allow_paths:
            raise HTTPException(403, "this worker does not read files on its machine (start it with "
                                     "--allow-paths, or upload the volume's bytes)")
        array, spacing = _read_array(request.path)
        return worker.add_volume(volume_id, array, parse_window(request.window), request.spacing or spacing)

    @api.get("/volumes/{volume_id}", summary="a volume's shape, window and how many slices are encoded per axis")
    def volume(volume_id: str) -> Dict[str, Any]:
        return worker.volume_status(volume_id)

    @api.delete("/volumes/{volume_id}", summary="forget a volume (and cancel its jobs)")
    def remove(volume_id: str) -> Dict[str, Any]:
        worker.remove_volume(volume_id)
        return {"removed": volume_id}

    @api.post("/volumes/{volume_id}/predict", summary="prompts on one slice -> mask, predicted IoU, candidates")
    def predict(volume_id: str, request: PredictRequest) -> Dict[str, Any]:
        return worker.predict(volume_id, request.axis, request.positive, request.negative, request.box,
                              request.multimask, request.candidates, request.candidate,
                              request.choice_masks)

    @api.post("/volumes/{volume_id}/encode", summary="encode the slices along an axis in the background (a job)")
    def encode(volume_id: str, request: EncodeRequest) -> Dict[str, Any]:
        return worker.start_encoding(volume_id, request.axis, request.around).status()

    @api.post("/volumes/{volume_id}/propagate", summary="propagate from the prompted slices through the volume (a job); "
                                                        "slices between two prompted slices are filled")
    def propagate(volume_id: str, request: PropagateRequest) -> Dict[str, Any]:
        return worker.start_propagation(volume_id, request.axis, request.positive, request.negative, request.box,
                                        request.direction, request.options, request.boxes,
                                        request.candidates).status()

    @api.get("/jobs/{job_id}", summary="a job's state and progress")
    def job(job_id: str) -> Dict[str, Any]:
        return worker.jobs.get(job_id).status()

    @api.get("/jobs/{job_id}/result", summary="a finished job's result (propagation: cropped mask, slices, stops)")
    def job_result(job_id: str) -> Dict[str, Any]:
        job = worker.jobs.get(job_id)
        if job.state == "failed":
            raise HTTPException(409, f"the {job.kind} job failed: {job.error}")
        if job.result is None:
            raise HTTPException(409, f"the {job.kind} job is {job.state}: it has no result")
        return job.result

    @api.delete("/jobs/{job_id}", summary="cancel a job (it stops before its next slice)")
    def cancel(job_id: str) -> Dict[str, Any]:
        return worker.jobs.cancel(job_id).status()

    app.include_router(api)
    return app


def openapi_schema() -> Dict[str, Any]:
    """The API's OpenAPI document (docs/serve_openapi.json), built without loading a model."""
    from fastapi.openapi.utils import get_openapi

    app = create_app(Worker(predictor_factory=lambda m, d: None), token="unused")
    return get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)


def _floats(text: str, what: str) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{what} '{text}' is not comma-separated numbers") from None


def _read_array(path: str):
    """A server-side file -> ``(Z, Y, X)`` array and spacing (x, y, z)."""
    import numpy as np

    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False), (1.0, 1.0, 1.0)
        except OSError as exc:
            raise FileNotFoundError(f"cannot read {path}: {exc}") from None
    from synthfm.io import read_volume

    volume = read_volume(path)
    return volume.array, tuple(volume.spacing)


class BackgroundServer:
    """Serve ``app`` on 127.0.0.1 from a thread of this process (tests, benchmarks, notebooks; never in Slicer)."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        import socket
        import threading

        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = 10.0) -> "BackgroundServer":
        import time

        end = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > end or not self._thread.is_alive():
                raise RuntimeError("the background SynthFM server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()
