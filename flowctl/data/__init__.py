"""Data readers/writers of real formats and synthetic generators (no models here)."""

from flowctl.data.table import DataError, load_table, split
from flowctl.data.toy import TOYS, Toy, make_toy

__all__ = ["TOYS", "DataError", "Toy", "load_table", "make_toy", "split"]
