"""The tuspyserver peer: its FastAPI router at ``/files``, started by uvicorn (see peers.py).

Storage is tuspyserver's default filesystem backend in ``$FREIGHT_BENCH_TUS_DIR``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from tuspyserver import create_tus_router

__all__ = ["create_app"]


def create_app() -> FastAPI:
    app = FastAPI()
    app.include_router(
        create_tus_router(prefix="files", files_dir=os.environ["FREIGHT_BENCH_TUS_DIR"])
    )
    return app
