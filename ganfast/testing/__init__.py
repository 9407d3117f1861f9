"""Test utilities shared by ganfast's test suite (and usable by people testing their own kernels)."""
from ganfast.testing.accuracy import (FLOORS, assert_matches_oracle, assert_rounded_to_nearest, first_mismatches,
                                      poison_like)

__all__ = ["FLOORS", "assert_matches_oracle", "assert_rounded_to_nearest", "first_mismatches", "poison_like"]
