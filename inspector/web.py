"""Shared web plumbing for the inspector's pages: templates and the store handle.

Every page module defines an ``APIRouter`` and reads the store with
``store(request)``; templates render with autoescape on (captured text is untrusted:
never mark it safe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.autoescape = True


def store(request: Request) -> Any:
    """The ClickHouse client the app was created with."""
    return request.app.state.store


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Any:
    return templates.TemplateResponse(request, name, context, status_code=status_code)
