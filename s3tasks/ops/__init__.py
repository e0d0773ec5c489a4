"""Operators' tools that drive the core again: recovery of runs stuck past their lease."""
