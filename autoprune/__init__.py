"""autoprune: find per-layer channel counts under a FLOPs/params budget and build the smaller net."""

__version__ = "0.1.0"

from autoprune.errors import AutopruneError
from autoprune.models import available_models, create_model

__all__ = ["AutopruneError", "__version__", "available_models", "create_model"]
