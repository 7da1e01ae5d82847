"""novita-lifecycle: a control plane for GPU instances on Novita.ai."""

__version__ = "0.1.0"
