"""Generic training of any ``nn.Module`` with a loss function: loop, checkpoints, resume,
early stopping, non-finite guards, SIGTERM handling and DDP. Knows nothing about flows.
"""

from .checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    safe_load,
    save_checkpoint,
    top_checkpoints,
)
from .config import DEFAULTS, check_values, validate_config
from .errors import ConfigError, TrainingError, TrainingInterrupted
from .trainer import resolve_device, seed_everything, train

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "DEFAULTS",
    "ConfigError",
    "TrainingError",
    "TrainingInterrupted",
    "check_values",
    "load_checkpoint",
    "resolve_device",
    "safe_load",
    "save_checkpoint",
    "seed_everything",
    "top_checkpoints",
    "train",
    "validate_config",
]
