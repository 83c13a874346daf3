"""flowrt's HTTP runtime: the Litestar app (:func:`create_app`) and the service around it (:func:`run_flow_runtime`)."""

from .app import create_app
from .runtime import FlowRuntime, Settings, run_flow_runtime

__all__ = ["FlowRuntime", "Settings", "create_app", "run_flow_runtime"]
