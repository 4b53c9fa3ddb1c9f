"""Tests of mltidy.linking."""
