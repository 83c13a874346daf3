"""flowrt's HTTP runtime: the Litestar app (:func:`create_app`) and the server around it (:func:`run_flow_runtime`)."""

from .app import create_app

__all__ = ["create_app"]
