"""Diagram renderers for the compiled machine, one module per format."""

from engine.machine.render.dot import render_dot
from engine.machine.render.mermaid import render_mermaid

RENDERERS = {"mermaid": render_mermaid, "dot": render_dot}

__all__ = ["RENDERERS", "render_dot", "render_mermaid"]
