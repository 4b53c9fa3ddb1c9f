"""Tests of mltidy.supervision."""
