"""Tests of mltidy.watch."""
