"""Model families. Each sub-package registers a ``TaskSpec`` on import (found by
``trainer.core.registry``); adding a task is adding a folder here."""
