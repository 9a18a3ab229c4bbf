"""Image Classification Studio engine: headless data, models, training, evaluation and prediction.

Nothing in this package imports streamlit; the dashboard, the CLI and the tests all use it alike.
"""

from engine.errors import UserError

__all__ = ["UserError"]
