"""Topology maths on plain arrays (no torch, no NNI): distance matrices, persistence
diagrams, diagram distances, per-neuron salience, Betti numbers."""
