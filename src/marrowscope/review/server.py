"""FastAPI routes of the review app (routes only: the work is in :class:`.service.ReviewService`).

Pages: ``/`` (cohort) and ``/slide/{id}``; JSON API under ``/api``; DeepZoom tiles under
``/slides/{id}/tiles/``; the model's files under ``/files/{id}/`` and the review exports under
``/review-files/{id}/`` (only files inside those folders: anything else is 404). Every request that
changes something (POST, PATCH, PUT, DELETE) needs the server's token in the ``X-Token`` header.
"""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from marrowscope.errors import InputError
from marrowscope.review.catalog import SlideNotFound
from marrowscope.review.service import ReviewService
from marrowscope.review.store import EditConflict, EditRejected

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DZI_NAME = "slide"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _static_dir() -> Path:
    return Path(str(resources.files("marrowscope.review") / "static"))


def _inside(folder: Path, name: str) -> Path:
    """``folder/name`` if it is a file inside ``folder`` (after resolving links), else 404."""
    base = folder.resolve()
    p = (base / name).resolve()
    if not p.is_relative_to(base) or not p.is_file():
        raise SlideNotFound(name, "no such file")
    return p


def create_app(service: ReviewService, token: str) -> FastAPI:
    app = FastAPI(title="marrowscope review", docs_url=None, redoc_url=None, openapi_url=None)
    static = _static_dir()

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        if request.method not in SAFE_METHODS and not secrets.compare_digest(
            request.headers.get("x-token", ""), token
        ):
            return JSONResponse(
                {
                    "detail": "missing or wrong X-Token header: use the page opened from the "
                    "URL `marrowscope review` printed (it carries ?token=...)"
                },
                status_code=403,
            )
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.exception_handler(SlideNotFound)
    async def not_found(request: Request, e: SlideNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(EditConflict)
    async def conflict(request: Request, e: EditConflict) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=409)

    @app.exception_handler(EditRejected)
    async def rejected(request: Request, e: EditRejected) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, e: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=422)

    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    def cohort_page() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get("/slide/{key}", include_in_schema=False)
    def slide_page(key: str) -> FileResponse:
        service.catalog.get(key)
        return FileResponse(static / "slide.html")

    @app.get("/api/slides")
    def slides() -> list[dict[str, Any]]:
        return service.slides()

    @app.get("/api/slides/{key}")
    def slide(key: str) -> dict[str, Any]:
        return service.slide(key)

    @app.get("/api/slides/{key}/cells")
    def cells(key: str) -> dict[str, Any]:
        return service.cells(key)

    @app.patch("/api/slides/{key}/cells/{cell_id}")
    def edit_cell(key: str, cell_id: int, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.edit(key, cell_id, body)

    @app.post("/api/slides/{key}/cells", status_code=201)
    def add_cell(key: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return service.add(key, body.get("box"), body.get("label"))

    @app.delete("/api/slides/{key}/cells/{cell_id}")
    def delete_cell(key: str, cell_id: int, version: int | None = None) -> dict[str, Any]:
        return service.delete(key, cell_id, version)

    @app.get("/api/slides/{key}/differential")
    def differential(key: str) -> dict[str, Any]:
        return service.differential(key)

    @app.get("/api/slides/{key}/audit")
    def audit(key: str) -> list[dict[str, Any]]:
        return service.audit(key)

    @app.post("/api/slides/{key}/validate")
    def validate(key: str) -> dict[str, Any]:
        return service.validate(key)

    @app.post("/api/slides/{key}/export")
    def export(key: str) -> dict[str, Any]:
        return service.export(key)

    @app.get("/api/slides/{key}/cells/{cell_id}/crop.jpg")
    def crop(key: str, cell_id: int) -> Response:
        return Response(
            service.crop(key, cell_id),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @app.get(f"/slides/{{key}}/tiles/{DZI_NAME}.dzi")
    def dzi(key: str) -> Response:
        return Response(service.tiles(key).dzi(), media_type="application/xml")

    @app.get(f"/slides/{{key}}/tiles/{DZI_NAME}_files/{{level}}/{{name}}")
    def tile(key: str, level: int, name: str) -> Response:
        stem, _, fmt = name.partition(".")
        col, _, row = stem.partition("_")
        if fmt != "jpeg" or not col.isdigit() or not row.isdigit():
            raise SlideNotFound(name, "no such tile (expected COL_ROW.jpeg)")
        try:
            data = service.tiles(key).tile(level, int(col), int(row))
        except ValueError as e:
            raise SlideNotFound(name, str(e)) from e
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/files/{key}/{name:path}")
    def model_file(key: str, name: str) -> FileResponse:
        return FileResponse(_inside(service.catalog.get(key).folder, name))

    @app.get("/review-files/{key}/{name:path}")
    def review_file(key: str, name: str) -> FileResponse:
        service.catalog.get(key)
        return FileResponse(_inside(service.store.folder / key, name))

    return app


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
