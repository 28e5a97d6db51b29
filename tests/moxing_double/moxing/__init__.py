"""Test double of Huawei's moxing (see tests/moxing_double/README.md)."""
from moxing import file  # noqa: F401
