"""Labelled scenario histories and fleet-scale synthetic metrics (see ``scenarios``)."""
