"""Tests of mltidy.notify."""
