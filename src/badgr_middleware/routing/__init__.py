"""Sans-IO routing: resolve a request into targets, classify outcomes, decide what happens next.

Nothing in this package does I/O or reads a clock it was not given.
"""
