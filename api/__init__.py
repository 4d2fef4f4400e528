"""The HTTP service beside the worker: ingestion for any language, long polls, binding
checks, health and metrics (``logout-orchestrator serve``; ``pip install
'logout-orchestrator[api]'``)."""

from api.app import create_app
from api.openapi import openapi_document
from api.problems import ApiProblem
from api.serve import serve

__all__ = ["ApiProblem", "create_app", "openapi_document", "serve"]
