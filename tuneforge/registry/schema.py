"""Every table of the registry on one `Base.metadata`: what the migrations' environment and the
models-vs-migrations check compare against. Import it where the whole schema is needed."""

from tuneforge.registry import access, jobs, store  # noqa: F401  (each module's tables join Base.metadata)
from tuneforge.registry.db import Base

metadata = Base.metadata
